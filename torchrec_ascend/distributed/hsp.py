"""Hierarchical sparse parallelism (HSP) around TorchRec's DistributedModelParallel.

The model is sharded by a stock `DistributedModelParallel` in TorchRec's 2D
environment (`ShardingEnv2D` over a (replicate, shard) device mesh with contiguous
groups: group g is ranks g*I .. g*I+I-1, normally one host), with one plan (from
`Planner(num_groups=M)`) moved onto each group's ranks: input and output
all-to-alls stay inside the group. TorchRec's own 2D wrapper (`DMPCollection`) is
CUDA/MTIA-only in 1.8 and averages weights across groups every few steps, which
changes the trajectory; HSP does neither. Instead, after backward:

1. per table shard, the group's gradient rows are summed per unique id, the
   replica group (the M ranks holding this shard) all-gathers the active ids and
   all-reduces the gradient rows of their union;
2. the row-sparse optimizer applies the same update on every replica, so weights
   and optimizer states stay identical across groups;
3. dense parameters are data-parallel: their gradients are all-reduced over the
   world.

Both sparse and dense gradients are averaged over the world (gradient of the mean
of the per-rank losses), so M groups of I ranks train exactly like one process on
the concatenated global batch.

Example::

    >>> plan = Planner(topology, num_groups=M).collective_plan(model, sharders)
    >>> hsp = HSPModelParallel(model, plan, sharders, 8, RowwiseAdagrad(0.05))
    >>> loss = hsp(batch); loss.backward(); hsp.finish_backward(); dense_opt.step()
"""

import copy
import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharding_spec import EnumerableShardingSpec
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.remote_device import _remote_device
from torchrec.distributed.comm_ops import get_gradient_division
from torchrec.distributed.embedding_lookup import (
    GroupedEmbeddingsLookup,
    GroupedPooledEmbeddingsLookup,
)
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import (
    ModuleSharder,
    ShardingEnv2D,
    ShardingPlan,
)
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollection,
    EmbeddingCollection,
)

from torchrec_ascend.distributed.comm_counter import comm_phase
from torchrec_ascend.distributed.groups import HSPGroups
from torchrec_ascend.distributed.lookup import (
    ShardGradients,
    install_sparse_grad_lookup,
)
from torchrec_ascend.distributed.sparse_optim import RowSparseOptimizer

logger = logging.getLogger(__name__)


class HSPModelParallel(nn.Module):
    """Shard inside the group, replicate across groups, sync active rows.

    Args:
        module: the unsharded model (on cpu or meta, as for DMP).
        plan: a plan for one group (ranks 0..I-1), e.g. `Planner.collective_plan`.
        sharders: the sharders the plan was made with.
        group_size: I, ranks per group (the plan's world size).
        sparse_optimizer: one optimizer for every table, or a dict table name ->
            optimizer.
        device: compute device of this rank.
    """

    def __init__(
        self,
        module: nn.Module,
        plan: ShardingPlan,
        sharders: list[ModuleSharder[nn.Module]],
        group_size: int,
        sparse_optimizer: RowSparseOptimizer | dict[str, RowSparseOptimizer],
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        world = dist.get_world_size()
        if group_size < 1 or world % group_size:
            raise ValueError(
                f"group_size must divide the world size {world}, got {group_size}"
            )
        device = device or torch.device("cpu")
        rank = dist.get_rank()
        mesh = DeviceMesh(
            device_type=device.type,
            mesh=[list(range(g, g + group_size)) for g in range(0, world, group_size)],
            mesh_dim_names=("replicate", "shard"),
        )
        self.groups = HSPGroups(
            world_size=world,
            group_size=group_size,
            rank=rank,
            group_index=rank // group_size,
            group_rank=rank % group_size,
            shard_pg=mesh.get_group(mesh_dim="shard"),
            replica_pg=mesh.get_group(mesh_dim="replicate"),
        )
        env = ShardingEnv2D(
            sharding_pg=self.groups.shard_pg,
            replica_pg=self.groups.replica_pg,
            global_pg=dist.GroupMember.WORLD,
            device_mesh=mesh,
            node_group_size=group_size,
            use_inter_host_allreduce=True,
        )
        initial_tables = _unsharded_tables(module)
        self.dmp = DistributedModelParallel(
            module,
            env=env,
            device=device,
            plan=plan_for_group(plan, self.groups.group_index, group_size),
            sharders=sharders,
            init_data_parallel=False,
        )
        self._lookups = self._install_lookups()
        self.shards: list[ShardGradients] = [
            s for lk in self._lookups for s in lk.shards
        ]
        self._optimizers = {}
        self._states = []
        for shard in self.shards:
            opt = (
                sparse_optimizer.get(shard.table)
                if isinstance(sparse_optimizer, dict)
                else sparse_optimizer
            )
            if opt is None:
                raise ValueError(f"no sparse optimizer for table {shard.table!r}")
            self._optimizers[shard.table] = opt
            self._states.append(opt.init_state(shard.weight))
        shard_weights = {id(s.weight) for s in self.shards}
        self.dense_parameters = [
            p
            for p in self.dmp.parameters()
            if p.requires_grad and id(p) not in shard_weights and not _is_tbe_slice(p)
        ]
        self.step_count = 0
        self._load_initial_tables(initial_tables)
        self._broadcast_initial_state()

    def _install_lookups(self):
        # Sharded TorchRec modules keep their lookups in a plain `_lookups` list,
        # outside the module tree.
        lookups = []
        for name, sub in self.dmp.named_modules():
            for lookup in getattr(sub, "_lookups", None) or []:
                lookup = getattr(lookup, "module", lookup)
                if isinstance(lookup, GroupedPooledEmbeddingsLookup):
                    pooled = True
                elif isinstance(lookup, GroupedEmbeddingsLookup):
                    pooled = False
                else:
                    # Limitation: data-parallel tables (dense kernel, wrapped in
                    # DDP) and inference lookups keep no row shard to synchronise.
                    raise ValueError(
                        f"{name}: HSP needs model-parallel tables, got a "
                        f"{type(lookup).__name__} lookup"
                    )
                for kernel in lookup._emb_modules:
                    lookups.append(install_sparse_grad_lookup(kernel, pooled))
        if not lookups:
            raise ValueError("the plan shards no embedding table")
        return lookups

    @torch.no_grad()
    def _load_initial_tables(self, tables: dict[str, torch.Tensor]) -> None:
        """Start the shards from the module's own rows (TorchRec re-initialises
        pooled shards instead of copying them)."""
        for shard in self.shards:
            full = tables.get(shard.table)
            if full is None:
                continue
            rows, cols = shard.weight.shape
            shard.weight.copy_(
                full[
                    shard.row_offset : shard.row_offset + rows,
                    shard.col_offset : shard.col_offset + cols,
                ]
            )

    @torch.no_grad()
    def _broadcast_initial_state(self) -> None:
        """Start every replica from group 0's shards and rank 0's dense weights."""
        replica_src = dist.get_global_rank(self.groups.replica_pg, 0)
        for shard in self.shards:
            buf = shard.weight.contiguous()
            dist.broadcast(buf, src=replica_src, group=self.groups.replica_pg)
            shard.weight.copy_(buf)
        for p in self.dense_parameters:
            dist.broadcast(p.data, src=0)

    def forward(self, *args, **kwargs):
        for shard in self.shards:
            shard.clear()
        return self.dmp(*args, **kwargs)

    # -- after backward ------------------------------------------------------------

    def finish_backward(self) -> None:
        """Average dense gradients and apply the synchronised sparse update."""
        self.allreduce_dense_gradients()
        self.sparse_step()

    @torch.no_grad()
    def allreduce_dense_gradients(self) -> None:
        params = self.dense_parameters
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        with comm_phase("dense"):
            dist.all_reduce(flat)
        flat /= self.groups.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    @torch.no_grad()
    def sparse_step(self) -> None:
        """Sync the active gradient rows over the replica group and update."""
        self.step_count += 1
        pg = self.groups.replica_pg
        replicas = self.groups.num_groups
        for shard, state in zip(self.shards, self._states):
            ids, grads = shard.summed()
            with comm_phase("sparse_sync"):
                if replicas > 1:
                    ids, grads = _allreduce_rows(ids, grads, pg, replicas)
            grads /= self._sparse_divisor()
            if ids.numel():
                self._optimizers[shard.table].update(
                    shard.weight, ids, grads, state, self.step_count
                )
            shard.clear()

    def _sparse_divisor(self) -> int:
        # TorchRec's output all-to-all backward already divides the rows by the
        # shard group's size when gradient division is on (its default), so only
        # the number of groups is left to divide by for a world mean.
        if get_gradient_division():
            return self.groups.num_groups
        return self.groups.world_size

    # -- inspection ----------------------------------------------------------------

    def sparse_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per local shard (table@row_offset:col_offset), weight and optimizer state."""
        out = {}
        for shard, state in zip(self.shards, self._states):
            key = f"{shard.table}@{shard.row_offset}:{shard.col_offset}"
            out[key] = {"weight": shard.weight, **state}
        return out


def plan_for_group(
    plan: ShardingPlan, group_index: int, group_size: int
) -> ShardingPlan:
    """A copy of a one-group plan (ranks 0..I-1) on group `group_index`'s ranks."""
    plan = copy.deepcopy(plan)
    offset = group_index * group_size
    for module_plan in plan.plan.values():
        for sharding in module_plan.values():
            if sharding.ranks is not None:
                sharding.ranks = [r + offset for r in sharding.ranks]
            spec = sharding.sharding_spec
            if not isinstance(spec, EnumerableShardingSpec):
                continue
            for shard in spec.shards:
                device = shard.placement.device()
                shard.placement = _remote_device(
                    f"rank:{shard.placement.rank() + offset}/{device}"
                )
    return plan


def _unsharded_tables(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every materialised EC / EBC table weight, by table name."""
    tables = {}
    for sub in module.modules():
        if isinstance(sub, EmbeddingCollection):
            weights = {n: e.weight for n, e in sub.embeddings.items()}
        elif isinstance(sub, EmbeddingBagCollection):
            weights = {n: e.weight for n, e in sub.embedding_bags.items()}
        else:
            continue
        for name, weight in weights.items():
            if weight.device.type != "meta":
                tables[name] = weight.detach().clone()
    return tables


def _is_tbe_slice(p: torch.Tensor) -> bool:
    return type(p).__name__ == "TableBatchedEmbeddingSlice"


def _allreduce_rows(
    ids: torch.Tensor, grads: torch.Tensor, pg: dist.ProcessGroup, replicas: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Union of the replicas' active ids and the sum of their gradient rows."""
    count = torch.tensor([ids.numel()], dtype=torch.int64)
    counts = [torch.zeros_like(count) for _ in range(replicas)]
    dist.all_gather(counts, count, group=pg)
    width = int(max(int(c) for c in counts))
    if width == 0:
        return ids, grads
    padded = torch.full((width,), -1, dtype=torch.int64)
    padded[: ids.numel()] = ids
    gathered = [torch.empty_like(padded) for _ in range(replicas)]
    dist.all_gather(gathered, padded, group=pg)
    union = torch.unique(torch.cat(gathered))
    union = union[union >= 0]
    rows = grads.new_zeros(union.numel(), grads.shape[1])
    rows[torch.searchsorted(union, ids)] = grads
    dist.all_reduce(rows, group=pg)
    return union, rows
