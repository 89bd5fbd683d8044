"""Cluster topology: hosts of devices joined by two link tiers, with bandwidths and
capacities, and the rank -> host mapping that decides which tier a byte travels on.

Ranks are laid out host-major, as torchrun does: rank = host * devices_per_host +
local_rank. Traffic between two ranks of one host uses the intra-node tier (HCCS on
Ascend 910B, NVLink on GPUs, shared memory on CPU hosts); anything else crosses the
inter-node tier (RoCE / InfiniBand / Ethernet).
"""

import logging
import os
from dataclasses import dataclass

import torch
from torchrec.distributed.planner.types import Topology as TorchRecTopology

from torchrec_ascend.device import CPU, CUDA, NPU

logger = logging.getLogger(__name__)

INTRA_NODE = "intra"
INTER_NODE = "inter"
LINK_TIERS = (INTRA_NODE, INTER_NODE)

_DEVICE_TYPES = (CPU, CUDA, NPU)
_GIB = 1024**3
_GB = 1e9


@dataclass(frozen=True)
class ClusterTopology:
    """Hosts x devices with a bandwidth per link tier.

    Attributes:
        num_hosts: machines in the job.
        devices_per_host: ranks per machine (LOCAL_WORLD_SIZE).
        device_type: NPU, CUDA or CPU (torchrec_ascend.device); plans place
            shards on `<type>:<i>`.
        intra_node_bandwidth: bytes/s one device can send to peers on its host.
        inter_node_bandwidth: bytes/s one device can send to other hosts (its NIC
            share).
        latency_s: fixed cost of one collective call, added per call when projecting.
        device_memory: bytes of HBM (accelerators) or DRAM share (CPU) per rank.
        host_memory: bytes of host DRAM per rank.
    """

    num_hosts: int
    devices_per_host: int
    device_type: str = "cpu"
    intra_node_bandwidth: float = 20 * _GB
    inter_node_bandwidth: float = 2.5 * _GB
    latency_s: float = 20e-6
    device_memory: int = 32 * _GIB
    host_memory: int = 64 * _GIB

    def __post_init__(self) -> None:
        if self.num_hosts < 1 or self.devices_per_host < 1:
            raise ValueError(
                "num_hosts and devices_per_host must be >= 1, got "
                f"{self.num_hosts} and {self.devices_per_host}"
            )
        if self.device_type not in _DEVICE_TYPES:
            raise ValueError(
                f"device_type must be one of {_DEVICE_TYPES}, got {self.device_type!r}"
            )
        if self.intra_node_bandwidth <= 0 or self.inter_node_bandwidth <= 0:
            raise ValueError("link bandwidths must be > 0 bytes/s")

    @property
    def world_size(self) -> int:
        return self.num_hosts * self.devices_per_host

    def host_of(self, rank: int) -> int:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {rank}")
        return rank // self.devices_per_host

    def tier(self, src: int, dst: int) -> str:
        """The link tier a message from global rank `src` to `dst` uses."""
        return INTRA_NODE if self.host_of(src) == self.host_of(dst) else INTER_NODE

    def bandwidth(self, tier: str) -> float:
        if tier == INTRA_NODE:
            return self.intra_node_bandwidth
        if tier == INTER_NODE:
            return self.inter_node_bandwidth
        raise ValueError(f"tier must be one of {LINK_TIERS}, got {tier!r}")

    def device(self, local_rank: int) -> torch.device:
        """The torch device of a rank on its host (`npu:<i>`, `cuda:<i>` or cpu)."""
        if self.device_type == "cpu":
            return torch.device("cpu")
        return torch.device(f"{self.device_type}:{local_rank}")

    def to_torchrec(self, world_size: int | None = None) -> TorchRecTopology:
        """TorchRec's planner topology for `world_size` ranks (a whole HSP group).

        TorchRec's enumerator only knows CPU, CUDA and MTIA; an NPU is planned as an
        HBM accelerator (CUDA) and its placements renamed afterwards.
        """
        world = self.world_size if world_size is None else world_size
        accel = self.device_type != "cpu"
        return TorchRecTopology(
            world_size=world,
            local_world_size=min(self.devices_per_host, world),
            compute_device=CUDA if accel else CPU,
            hbm_cap=self.device_memory if accel else 0,
            ddr_cap=self.host_memory,
            intra_host_bw=self.intra_node_bandwidth,
            inter_host_bw=self.inter_node_bandwidth,
        )


def ascend_910b_nodes(num_hosts: int) -> ClusterTopology:
    """Atlas 800T A2 style nodes: 8 Ascend 910B (64 GB HBM) per host.

    HCCS gives each NPU about 56 GB/s to its peers; each NPU has one 200 Gb/s RoCE
    port (25 GB/s) to other hosts.
    """
    return ClusterTopology(
        num_hosts=num_hosts,
        devices_per_host=8,
        device_type="npu",
        intra_node_bandwidth=56 * _GB,
        inter_node_bandwidth=25 * _GB,
        latency_s=30e-6,
        device_memory=64 * _GIB,
        host_memory=128 * _GIB,
    )


def gpu_nodes(num_hosts: int, devices_per_host: int = 8) -> ClusterTopology:
    """NVLink GPU hosts (about 300 GB/s per GPU) with one 400 Gb/s NIC per GPU."""
    return ClusterTopology(
        num_hosts=num_hosts,
        devices_per_host=devices_per_host,
        device_type=CUDA,
        intra_node_bandwidth=300 * _GB,
        inter_node_bandwidth=50 * _GB,
        latency_s=15e-6,
        device_memory=80 * _GIB,
        host_memory=128 * _GIB,
    )


def cpu_hosts(num_hosts: int, ranks_per_host: int = 1) -> ClusterTopology:
    """Plain CPU hosts: shared memory inside a host, 25 Gb/s Ethernet between."""
    return ClusterTopology(
        num_hosts=num_hosts,
        devices_per_host=ranks_per_host,
        device_type="cpu",
        intra_node_bandwidth=20 * _GB,
        inter_node_bandwidth=25e9 / 8,
        latency_s=50e-6,
        device_memory=16 * _GIB,
        host_memory=16 * _GIB,
    )


def topology_from_env(base: ClusterTopology | None = None) -> ClusterTopology:
    """The topology torchrun describes (WORLD_SIZE, LOCAL_WORLD_SIZE).

    Bandwidths and capacities come from `base` (default: `cpu_hosts`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if local < 1 or world % local:
        raise ValueError(
            f"WORLD_SIZE ({world}) must be a multiple of LOCAL_WORLD_SIZE ({local})"
        )
    template = base or cpu_hosts(1)
    return ClusterTopology(
        num_hosts=world // local,
        devices_per_host=local,
        device_type=template.device_type,
        intra_node_bandwidth=template.intra_node_bandwidth,
        inter_node_bandwidth=template.inter_node_bandwidth,
        latency_s=template.latency_s,
        device_memory=template.device_memory,
        host_memory=template.host_memory,
    )
