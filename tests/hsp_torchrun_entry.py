"""Rank body started by torchrun (2 "hosts" x 2 ranks on 127.0.0.1): HSP on the
retrieval model with the topology read from torchrun's environment; writes what it
measured next to what the byte model predicts."""

import datetime
import json
import os
import sys

import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hsp_workers import retrieval_batch, retrieval_ids, retrieval_model  # noqa: E402

from torchrec_ascend.distributed import (  # noqa: E402
    CommCounter,
    HSPModelParallel,
    RowwiseAdagrad,
)
from torchrec_ascend.planner import (  # noqa: E402
    Planner,
    default_sharders,
    layouts_from_plan,
    step_traffic,
    topology_from_env,
)


def main(out_dir: str) -> None:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    topology = topology_from_env()
    group_size = topology.devices_per_host
    model = retrieval_model()
    reference = retrieval_model()
    sharders = default_sharders()
    plan = Planner(topology, num_groups=topology.num_hosts).collective_plan(
        model, sharders
    )
    hsp = HSPModelParallel(
        model, plan, sharders, group_size, {"item": RowwiseAdagrad(0.05)}
    )
    for step in range(2):
        counter = CommCounter(topology)
        with counter:
            loss = hsp(*retrieval_batch(step, rank))
            loss.backward()
            hsp.finish_backward()
    totals = counter.totals()
    modelled = step_traffic(
        layouts_from_plan(plan, reference),
        [retrieval_ids(retrieval_batch(1, r)) for r in range(world)],
        3,
        topology,
        group_size,
        hsp_sync=True,
    )
    record = {
        "rank": rank,
        "node": int(os.environ["GROUP_RANK"]),
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "hosts": topology.num_hosts,
        "devices_per_host": topology.devices_per_host,
        "shard_ranks": hsp.groups.shard_ranks(),
        "replica_ranks": hsp.groups.replica_ranks(),
        "measured": totals,
        "modelled": {"a2a": modelled.a2a, "sync": modelled.sync},
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
