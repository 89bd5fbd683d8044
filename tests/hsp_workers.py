"""Rank bodies for the HSP and planner multi-process tests (importable by spawn)."""

import copy
import dataclasses

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.distributed import (
    Adagrad,
    Adam,
    CommCounter,
    HSPModelParallel,
    RowwiseAdagrad,
)
from torchrec_ascend.models import SequentialRetrieval, get_preset
from torchrec_ascend.planner import (
    ClusterTopology,
    Planner,
    default_sharders,
    layouts_from_plan,
    step_traffic,
)

NUM_ITEMS = 60
STEPS = int(__import__("os").environ.get("HSP_STEPS", "3"))


# -- the project's retrieval model -------------------------------------------------


def retrieval_model() -> SequentialRetrieval:
    preset = get_preset("smoke")
    model_cfg = dataclasses.replace(preset.model, dropout=0.0, input_dropout=0.0)
    config = dataclasses.replace(preset, model=model_cfg)
    torch.manual_seed(0)
    return SequentialRetrieval(NUM_ITEMS, config, use_timestamps=False)


def retrieval_batch(step: int, rank: int, batch_size: int = 3, negatives: int = 4):
    g = torch.Generator().manual_seed(1000 * step + rank)
    lengths = torch.randint(1, 7, (batch_size,), generator=g)
    n = int(lengths.sum())
    history = KeyedJaggedTensor.from_lengths_sync(
        ["item"], torch.randint(1, NUM_ITEMS + 1, (n,), generator=g), lengths
    )
    targets = torch.randint(1, NUM_ITEMS + 1, (n,), generator=g)
    negative_ids = torch.randint(1, NUM_ITEMS + 1, (n, negatives), generator=g)
    return history, targets, negative_ids


def retrieval_ids(batch) -> dict[str, torch.Tensor]:
    history, targets, negative_ids = batch
    return {
        "item": history.values(),
        "target": targets,
        "negative": negative_ids.reshape(-1),
    }


# -- a small pooled (EmbeddingBag) job ---------------------------------------------

POOLED_TABLES = {"t_rowwise": 40, "t_adagrad": 30, "t_adam": 24}


class PooledModel(nn.Module):
    """Three sequence tables, each bag summed in the model, then an MLP."""

    def __init__(self, device=None) -> None:
        super().__init__()
        self.ec = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=name,
                    embedding_dim=8,
                    num_embeddings=rows,
                    feature_names=[f"f_{name}"],
                )
                for name, rows in POOLED_TABLES.items()
            ],
            device=device,
        )
        self.mlp = nn.Sequential(nn.Linear(24 + 2, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor, labels: torch.Tensor
    ):
        out = self.ec(sparse)
        pooled = []
        for key in sparse.keys():
            jt = out[key]
            bag = torch.repeat_interleave(
                torch.arange(jt.lengths().numel()), jt.lengths().long()
            )
            pooled.append(
                jt.values()
                .new_zeros(jt.lengths().numel(), 8)
                .index_add(0, bag, jt.values())
            )
        pooled = torch.cat(pooled, dim=1)
        logits = self.mlp(torch.cat([pooled, dense], dim=1)).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, labels)


class BagModel(nn.Module):
    """The same three tables as EmbeddingBags (pooled inside TorchRec)."""

    def __init__(self) -> None:
        super().__init__()
        from torchrec.modules.embedding_configs import EmbeddingBagConfig
        from torchrec.modules.embedding_modules import EmbeddingBagCollection

        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=name,
                    embedding_dim=8,
                    num_embeddings=rows,
                    feature_names=[f"f_{name}"],
                )
                for name, rows in POOLED_TABLES.items()
            ]
        )
        self.mlp = nn.Sequential(nn.Linear(24 + 2, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, sparse, dense, labels):
        pooled = self.ebc(sparse).values()
        logits = self.mlp(torch.cat([pooled, dense], dim=1)).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, labels)


def pooled_batch(step: int, rank: int, batch_size: int = 4):
    g = torch.Generator().manual_seed(7000 * step + rank)
    keys = [f"f_{n}" for n in POOLED_TABLES]
    lengths = torch.randint(0, 4, (len(keys) * batch_size,), generator=g)
    values = []
    for i, rows in enumerate(POOLED_TABLES.values()):
        n = int(lengths[i * batch_size : (i + 1) * batch_size].sum())
        values.append(torch.randint(0, rows, (n,), generator=g))
    sparse = KeyedJaggedTensor.from_lengths_sync(keys, torch.cat(values), lengths)
    dense = torch.randn(batch_size, 2, generator=g)
    labels = torch.randint(0, 2, (batch_size,), generator=g).float()
    return sparse, dense, labels


def pooled_optimizers():
    return {
        "t_rowwise": RowwiseAdagrad(lr=0.1),
        "t_adagrad": Adagrad(lr=0.1),
        "t_adam": Adam(lr=0.05),
    }


# -- single-process reference --------------------------------------------------------


def _reference_train(model, tables, optimizers, batches_per_step, world):
    """Train `model` on global batches; returns per-step per-rank losses, states."""
    dense = [p for n, p in model.named_parameters() if not _is_table(n, tables)]
    dense_opt = torch.optim.SGD(dense, lr=0.05)
    states = {name: optimizers[name].init_state(w) for name, w in tables.items()}
    losses = []
    for step, batches in enumerate(batches_per_step, start=1):
        step_losses = [model(*b) for b in batches]
        loss = torch.stack(step_losses).mean()
        loss.backward()
        with torch.no_grad():
            for name, weight in tables.items():
                grad = weight.grad
                # HSP updates every row a step looked up, as lazy sparse optimizers do.
                ids = torch.unique(_touched_ids(name, batches))
                optimizers[name].update(weight.data, ids, grad[ids], states[name], step)
                weight.grad = None
        dense_opt.step()
        dense_opt.zero_grad()
        losses.append([float(x) for x in step_losses])
    return losses, states


def _is_table(name: str, tables) -> bool:
    return any(name.endswith(f"{t}.weight") for t in tables)


def _touched_ids(table: str, batches) -> torch.Tensor:
    ids = []
    for b in batches:
        if isinstance(b[0], KeyedJaggedTensor) and table in POOLED_TABLES:
            ids.append(b[0][f"f_{table}"].values())
        else:
            ids.extend(retrieval_ids(b).values())
    return torch.cat(ids).long()


# -- the HSP equivalence run ---------------------------------------------------------


def _train_hsp(hsp, batches_per_step, rank, counter_topology):
    dense_opt = torch.optim.SGD(hsp.dense_parameters, lr=0.05)
    losses = []
    for batches in batches_per_step:
        counter = CommCounter(counter_topology)
        with counter:
            loss = hsp(*batches[rank])
            loss.backward()
            hsp.finish_backward()
        dense_opt.step()
        dense_opt.zero_grad()
        losses.append(float(loss))
    return losses, counter


def equivalence_worker(
    rank, world, group_size, out_path, jobs=("retrieval", "multi_table", "bags")
):
    topology = ClusterTopology(
        num_hosts=world // group_size, devices_per_host=group_size
    )
    num_groups = world // group_size
    results = {}

    for job in jobs:
        if job == "retrieval":
            model = retrieval_model()
            make_batch = retrieval_batch
            constraints = {"item": ParameterConstraints(sharding_types=["row_wise"])}
            optimizers = {"item": RowwiseAdagrad(lr=0.05)}
        else:
            torch.manual_seed(1)
            model = PooledModel() if job == "multi_table" else BagModel()
            make_batch = pooled_batch
            constraints = {
                "t_rowwise": ParameterConstraints(sharding_types=["row_wise"]),
                "t_adagrad": ParameterConstraints(sharding_types=["row_wise"]),
                "t_adam": ParameterConstraints(sharding_types=["row_wise"]),
            }
            optimizers = pooled_optimizers()
        reference = copy.deepcopy(model)
        batches_per_step = [
            [make_batch(step, r) for r in range(world)] for step in range(STEPS)
        ]

        sharders = default_sharders()
        planner = Planner(topology, num_groups=num_groups, constraints=constraints)
        plan = planner.collective_plan(model, sharders)
        hsp = HSPModelParallel(model, plan, sharders, group_size, optimizers)
        groups = hsp.groups
        losses, counter = _train_hsp(hsp, batches_per_step, rank, topology)

        if job == "retrieval":
            tables = {"item": reference.item_embeddings.embeddings["item"].weight}
        else:
            tables = {
                n: (
                    reference.ec.embeddings[n].weight
                    if job == "multi_table"
                    else reference.ebc.embedding_bags[n].weight
                )
                for n in POOLED_TABLES
            }
        ref_losses, ref_states = _reference_train(
            reference, tables, copy.deepcopy(optimizers), batches_per_step, world
        )

        # Same rows and state in every group: gather this shard from all replicas.
        replica_equal = True
        shard_vs_ref = []
        for key, entries in hsp.sparse_state().items():
            table, offsets = key.split("@")
            row0, col0 = (int(x) for x in offsets.split(":"))
            for name, tensor in entries.items():
                gathered = [torch.empty_like(tensor) for _ in range(groups.num_groups)]
                dist.all_gather(gathered, tensor.contiguous(), group=groups.replica_pg)
                replica_equal &= all(torch.equal(gathered[0], t) for t in gathered)
                ref = tables[table] if name == "weight" else ref_states[table][name]
                rows = tensor.shape[0]
                ref_rows = ref.detach()[row0 : row0 + rows]
                if ref_rows.dim() == 2:
                    ref_rows = ref_rows[:, col0 : col0 + tensor.shape[1]]
                shard_vs_ref.append((key, name, float((tensor - ref_rows).abs().max())))

        dense_ref = dict(reference.named_parameters())
        dense_diff = 0.0
        for name, p in hsp.dmp.module.named_parameters():
            if name in dense_ref and not _is_table(name, tables):
                dense_diff = max(dense_diff, float((p - dense_ref[name]).abs().max()))

        totals = counter.totals()
        layouts = layouts_from_plan(plan, reference)
        modelled = step_traffic(
            layouts,
            [
                retrieval_ids(b) if job == "retrieval" else _pooled_ids(b)
                for b in batches_per_step[-1]
            ],
            batches_per_step[-1][0][0].stride(),
            topology,
            group_size,
            hsp_sync=True,
        )
        results[job] = {
            "losses": losses,
            "ref_losses": [step[rank] for step in ref_losses],
            "replica_equal": replica_equal,
            "shard_vs_ref": shard_vs_ref,
            "dense_diff": dense_diff,
            "bytes": totals,
            "modelled_last_step": {"a2a": modelled.a2a, "sync": modelled.sync},
            "num_shards": len(hsp.shards),
        }
    torch.save(results, f"{out_path}.{rank}")
    dist.barrier()


def _pooled_ids(batch) -> dict[str, torch.Tensor]:
    sparse = batch[0]
    return {k: sparse[k].values() for k in sparse.keys()}


# -- stock TorchRec pipeline on a plan from our planner -------------------------------


class _PipelineModel(nn.Module):
    def __init__(self, device=None) -> None:
        super().__init__()
        from torchrec.modules.embedding_configs import EmbeddingBagConfig
        from torchrec.modules.embedding_modules import EmbeddingBagCollection

        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=f"t{i}",
                    embedding_dim=8,
                    num_embeddings=64,
                    feature_names=[f"f{i}"],
                )
                for i in range(2)
            ],
            device=device,
        )
        self.linear = nn.Linear(16 + 3, 1)

    def forward(self, batch):
        pooled = self.ebc(batch.sparse_features).values()
        logits = self.linear(torch.cat([pooled, batch.dense_features], 1)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        return loss, logits.detach()


def _pipeline_batches(rank, steps):
    from torchrec.datasets.utils import Batch

    out = []
    for step in range(steps):
        g = torch.Generator().manual_seed(100 * step + rank)
        lengths = torch.randint(0, 4, (2 * 4,), generator=g)
        values = torch.randint(0, 64, (int(lengths.sum()),), generator=g)
        out.append(
            Batch(
                dense_features=torch.randn(4, 3, generator=g),
                sparse_features=KeyedJaggedTensor.from_lengths_sync(
                    ["f0", "f1"], values, lengths
                ),
                labels=torch.randint(0, 2, (4,), generator=g).float(),
            )
        )
    return out


def pipeline_worker(rank, world, out_path):
    """Our plan (row-wise and table-row-wise on CPU) under DMP: the stock
    TrainPipelineSparseDist and a plain loop give the same outputs."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from torchrec.optim.keyed import KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from torchrec_ascend.planner import cpu_hosts

    topology = cpu_hosts(1, world)
    constraints = {
        "t0": ParameterConstraints(sharding_types=["row_wise"]),
        "t1": ParameterConstraints(sharding_types=["table_row_wise"]),
    }
    fused = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.1}
    steps = 4
    outputs = {}
    for mode in ("pipeline", "loop"):
        torch.manual_seed(0)
        model = _PipelineModel(device=torch.device("meta"))
        sharders = default_sharders(fused)
        plan = Planner(topology, constraints=constraints).collective_plan(
            model, sharders
        )
        dmp = DistributedModelParallel(
            model, device=torch.device("cpu"), plan=plan, sharders=sharders
        )
        # Same starting point in both modes: meta tables are initialised randomly.
        with torch.no_grad():
            for name, p in dmp.named_parameters():
                g = torch.Generator().manual_seed(len(name))
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
        opt = KeyedOptimizerWrapper(dense, lambda p: torch.optim.SGD(p, lr=0.1))
        batches = _pipeline_batches(rank, steps)
        logits = []
        if mode == "pipeline":
            pipe = TrainPipelineSparseDist(dmp, opt, torch.device("cpu"))
            it = iter(batches)
            for _ in range(steps):
                logits.append(pipe.progress(it).clone())
        else:
            for batch in batches:
                opt.zero_grad()
                loss, out = dmp(batch)
                loss.backward()
                opt.step()
                logits.append(out.clone())
        outputs[mode] = {
            "logits": logits,
            "sharding": {n: s.sharding_type for n, s in plan.plan["ebc"].items()},
            "pipeline_type": type(dmp.module.ebc).__name__,
        }
    torch.save(outputs, f"{out_path}.{rank}")
    dist.barrier()
