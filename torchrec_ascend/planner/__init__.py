"""Sharding planner for existing TorchRec jobs: link-tier topology, device-generic
sharders, a drop-in planner (global or hierarchical sparse parallel) and plan
explanations with per-tier traffic."""

from torchrec_ascend.planner.explain import PlanReport, explain_plan, layouts_from_plan
from torchrec_ascend.planner.planner import Planner
from torchrec_ascend.planner.sharders import (
    DeviceGenericEmbeddingBagCollectionSharder,
    DeviceGenericEmbeddingCollectionSharder,
    default_sharders,
)
from torchrec_ascend.planner.topology import (
    INTER_NODE,
    INTRA_NODE,
    LINK_TIERS,
    ClusterTopology,
    ascend_910b_nodes,
    cpu_hosts,
    gpu_nodes,
    topology_from_env,
)
from torchrec_ascend.planner.traffic import (
    StepTraffic,
    TableLayout,
    latency_hops,
    projected_comm_seconds,
    ring_bytes,
    step_traffic,
)

__all__ = [
    "INTER_NODE",
    "INTRA_NODE",
    "LINK_TIERS",
    "ClusterTopology",
    "DeviceGenericEmbeddingBagCollectionSharder",
    "DeviceGenericEmbeddingCollectionSharder",
    "PlanReport",
    "Planner",
    "StepTraffic",
    "TableLayout",
    "ascend_910b_nodes",
    "cpu_hosts",
    "default_sharders",
    "explain_plan",
    "gpu_nodes",
    "latency_hops",
    "layouts_from_plan",
    "projected_comm_seconds",
    "ring_bytes",
    "step_traffic",
    "topology_from_env",
]
