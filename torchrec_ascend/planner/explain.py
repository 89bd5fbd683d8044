"""A readable account of a sharding plan: per table the sharding and ranks, per rank
the memory, and the bytes a step is expected to move over each link tier."""

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torchrec.distributed.types import ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollection,
    EmbeddingCollection,
)

from torchrec_ascend.planner.topology import LINK_TIERS, ClusterTopology
from torchrec_ascend.planner.traffic import StepTraffic, TableLayout, step_traffic

logger = logging.getLogger(__name__)

_ROW_SPLIT_TYPES = (
    ShardingType.ROW_WISE.value,
    ShardingType.TABLE_WISE.value,
    ShardingType.TABLE_ROW_WISE.value,
)


def _table_configs(module: nn.Module) -> dict[tuple[str, str], tuple[object, bool]]:
    found = {}
    for path, sub in module.named_modules():
        if isinstance(sub, EmbeddingCollection):
            for cfg in sub.embedding_configs():
                found[(path, cfg.name)] = (cfg, False)
        elif isinstance(sub, EmbeddingBagCollection):
            for cfg in sub.embedding_bag_configs():
                found[(path, cfg.name)] = (cfg, True)
    return found


def layouts_from_plan(
    plan: ShardingPlan, module: nn.Module, strict: bool = True
) -> list[TableLayout]:
    """Row layout of every table-wise, row-wise or table-row-wise table.

    Args:
        plan: the sharding plan.
        module: the unsharded model it was made for.
        strict: raise on a table the byte model does not cover; otherwise leave
            it out (data-parallel tables move no embedding bytes anyway).

    Raises:
        ValueError: a table uses a sharding the traffic model does not cover.
    """
    configs = _table_configs(module)
    layouts = []
    for path, module_plan in plan.plan.items():
        for name, sharding in module_plan.items():
            if (path, name) not in configs:
                raise ValueError(f"plan names {path}.{name}, not a table of module")
            cfg, pooled = configs[(path, name)]
            if sharding.sharding_type not in _ROW_SPLIT_TYPES:
                if not strict:
                    continue
                # Limitation: the byte model covers table-wise and row-wise shards;
                # column-wise and grid layouts are planned and run, not projected.
                raise ValueError(
                    f"table {name}: traffic model supports {_ROW_SPLIT_TYPES}, "
                    f"got {sharding.sharding_type}"
                )
            blocks = tuple(
                (
                    shard.placement.rank(),
                    shard.shard_offsets[0],
                    shard.shard_offsets[0] + shard.shard_sizes[0],
                )
                for shard in sharding.sharding_spec.shards
            )
            layouts.append(
                TableLayout(
                    name=name,
                    dim=cfg.embedding_dim,
                    pooled=pooled,
                    features=tuple(cfg.feature_names),
                    row_blocks=tuple(sorted(blocks, key=lambda b: b[1])),
                )
            )
    return layouts


@dataclass
class PlanReport:
    """What a plan does, in numbers.

    Attributes:
        tables: one row per table: (module path, table, sharding type, kernel,
            ranks inside a group).
        not_modelled: tables left out of the traffic estimate (data-parallel,
            column-wise or grid shards).
        rank_memory: bytes of weights plus optimizer state per group rank.
        traffic: expected bytes per step per link tier (uniformly drawn ids).
        num_groups: HSP groups (1 = global sharding).
    """

    tables: list[tuple[str, str, str, str, list[int]]]
    not_modelled: list[str]
    rank_memory: list[int]
    traffic: StepTraffic
    num_groups: int

    def __str__(self) -> str:
        lines = [f"sharding plan: {self.num_groups} group(s)", "tables:"]
        for path, name, kind, kernel, ranks in self.tables:
            lines.append(f"  {path}.{name}: {kind} ({kernel}) on ranks {ranks}")
        if self.not_modelled:
            lines.append(
                f"  (traffic not modelled for: {', '.join(self.not_modelled)})"
            )
        lines.append("memory per group rank (weights + optimizer state):")
        for rank, nbytes in enumerate(self.rank_memory):
            lines.append(f"  rank {rank}: {nbytes / 2**20:.2f} MiB")
        lines.append("estimated bytes per step (all ranks):")
        for tier in LINK_TIERS:
            lines.append(
                f"  {tier}-node: all-to-all {self.traffic.a2a[tier]:,} B, "
                f"cross-group sync {self.traffic.sync[tier]:,} B"
            )
        return "\n".join(lines)


def explain_plan(
    plan: ShardingPlan,
    module: nn.Module,
    topology: ClusterTopology,
    num_groups: int,
    batch_size: int,
    ids_per_sample: float = 1.0,
    state_floats_per_row: int = 1,
    seed: int = 0,
) -> PlanReport:
    """Summarise `plan` and estimate its per-step traffic.

    Args:
        plan: a plan for one shard group (`Planner.plan`).
        module: the unsharded model the plan was made for.
        topology: the whole cluster.
        num_groups: HSP groups M the plan is replicated over.
        batch_size: samples per rank per step.
        ids_per_sample: mean ids per sample per feature (Poisson lengths).
        state_floats_per_row: optimizer floats per row (1 for row-wise Adagrad,
            D for Adagrad, 2 D for Adam); for the memory column only.
        seed: for the synthetic ids.
    """
    group_size = topology.world_size // num_groups
    layouts = layouts_from_plan(plan, module, strict=False)
    modelled = {layout.name for layout in layouts}
    configs = _table_configs(module)

    tables = []
    rank_memory = [0] * group_size
    for path, module_plan in plan.plan.items():
        for name, sharding in module_plan.items():
            tables.append(
                (
                    path,
                    name,
                    sharding.sharding_type,
                    sharding.compute_kernel,
                    list(sharding.ranks or []),
                )
            )
            spec = sharding.sharding_spec
            if spec is None:
                # Data-parallel: a whole copy on every rank.
                cfg = configs[(path, name)][0]
                for rank in range(group_size):
                    rank_memory[rank] += (
                        4
                        * cfg.num_embeddings
                        * (cfg.embedding_dim + state_floats_per_row)
                    )
                continue
            for shard in spec.shards:
                rows, cols = shard.shard_sizes
                rank_memory[shard.placement.rank()] += (
                    4 * rows * (cols + state_floats_per_row)
                )

    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(topology.world_size):
        batch = {}
        for (_, _), (cfg, _) in configs.items():
            for feature in cfg.feature_names:
                rate = torch.full((batch_size,), float(ids_per_sample))
                n = int(torch.poisson(rate, generator=generator).sum())
                batch[feature] = torch.randint(
                    0, cfg.num_embeddings, (n,), generator=generator
                )
        batches.append(batch)
    traffic = step_traffic(
        layouts, batches, batch_size, topology, group_size, hsp_sync=num_groups > 1
    )
    not_modelled = [t[1] for t in tables if t[1] not in modelled]
    return PlanReport(tables, not_modelled, rank_memory, traffic, num_groups)
