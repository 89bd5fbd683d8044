"""TorchRec global sharding vs hierarchical sparse parallelism (HSP), same job.

Measured part: 4 gloo ranks on 127.0.0.1 posing as 2 hosts x 2 devices train the
project's SequentialRetrieval (HSTU) with (a) TorchRec's default planner and
sharders over all 4 ranks and (b) our planner with 2 groups under
`HSPModelParallel`, steps interleaved. Every collective is counted on the wire per
link tier (`CommCounter`) and timed.

Projected part: the same per-step byte model (validated against the counted bytes
in the measured part and in the tests) for 4, 8 and 16 Ascend 910B nodes x 8 NPUs,
row-wise over all ranks (global) vs row-wise inside each node (HSP), turned into
time with the topology's per-tier bandwidths.

Usage:
    python benchmarks/sparse_parallel.py --json runs/sparse_parallel.json
"""

import argparse
import dataclasses
import datetime
import json
import os
import socket
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 4
LOCAL = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(num_items: int):
    from torchrec_ascend.models import SequentialRetrieval, get_preset

    preset = get_preset("smoke")
    mcfg = dataclasses.replace(preset.model, dropout=0.0, input_dropout=0.0)
    torch.manual_seed(0)
    return SequentialRetrieval(
        num_items, dataclasses.replace(preset, model=mcfg), use_timestamps=False
    )


def draw_ids(
    n: int, num_items: int, g: torch.Generator, id_dist: str, zipf_s: float = 1.1
) -> torch.Tensor:
    """(n,) x int64 item ids in 1..num_items.

    "uniform" draws every item alike. "zipf" draws popularity ranks from a Zipf law
    P(k) ~ k^-s (inverse CDF of its continuous form) and scatters ranks over ids
    with a fixed multiplicative hash, as production id hashing does, so popular
    rows are spread over all shards.
    """
    if id_dist == "uniform":
        return torch.randint(1, num_items + 1, (n,), generator=g)
    if id_dist != "zipf" or zipf_s <= 1:
        raise ValueError(
            f"id_dist must be 'uniform' or 'zipf' with s > 1, got {id_dist!r}"
        )
    u = torch.rand(n, generator=g, dtype=torch.float64)
    ranks = ((num_items ** (1 - zipf_s) - 1) * u + 1) ** (1 / (1 - zipf_s))
    ranks = ranks.long().clamp(1, num_items) - 1
    return (ranks * 2_654_435_761) % num_items + 1


def _sequence_ids(batch_size, max_len, negatives, num_items, g, id_dist, zipf_s):
    """Histories, their next items as targets, and R negatives shared by the batch."""
    lengths = torch.randint(max_len // 2, max_len + 1, (batch_size,), generator=g)
    n = int(lengths.sum())
    history = draw_ids(n, num_items, g, id_dist, zipf_s)
    # The next item of each position: the history shifted by one (the last
    # position's target is a fresh draw).
    targets = torch.cat([history[1:], draw_ids(1, num_items, g, id_dist, zipf_s)])
    negs = draw_ids(negatives, num_items, g, id_dist, zipf_s)
    return lengths, history, targets, negs


def _batch(step, rank, num_items, batch_size, max_len, negatives, id_dist, zipf_s):
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    g = torch.Generator().manual_seed(10_000 * step + rank)
    lengths, history, targets, negs = _sequence_ids(
        batch_size, max_len, negatives, num_items, g, id_dist, zipf_s
    )
    kjt = KeyedJaggedTensor.from_lengths_sync(["item"], history, lengths)
    return kjt, targets, negs


def _dense_allreduce(params, world):
    from torchrec_ascend.distributed import comm_phase

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    with comm_phase("dense"):
        dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def _rank_main(rank, port, args, out_path):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(LOCAL),
        OMP_NUM_THREADS="1",
    )
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120)
    )
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from torchrec_ascend.distributed import (
        CommCounter,
        HSPModelParallel,
        RowwiseAdagrad,
    )
    from torchrec_ascend.planner import (
        Planner,
        default_sharders,
        layouts_from_plan,
        step_traffic,
        topology_from_env,
    )

    topology = topology_from_env()
    n_items = args.items

    # (a) TorchRec's own planner and sharders, global sharding.
    fused = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.05}
    stock_sharders = [EmbeddingCollectionSharder(fused_params=fused)]
    base_model = _model(n_items)
    base_plan = EmbeddingShardingPlanner(
        topology=Topology(
            world_size=WORLD, compute_device="cpu", local_world_size=LOCAL
        )
    ).collective_plan(base_model, stock_sharders, dist.GroupMember.WORLD)
    base = DistributedModelParallel(
        base_model,
        device=torch.device("cpu"),
        plan=base_plan,
        sharders=stock_sharders,
        init_data_parallel=False,
    )
    base_dense = [p for _, p in in_backward_optimizer_filter(base.named_parameters())]
    base_opt = torch.optim.SGD(base_dense, lr=0.01)

    # (b) our planner, 2 groups of 2 (one per simulated host), HSP runtime.
    hsp_model = _model(n_items)
    sharders = default_sharders(fused)
    hsp_plan = Planner(topology, num_groups=WORLD // LOCAL).collective_plan(
        hsp_model, sharders
    )
    hsp = HSPModelParallel(
        hsp_model, hsp_plan, sharders, LOCAL, {"item": RowwiseAdagrad(0.05)}
    )
    hsp_opt = torch.optim.SGD(hsp.dense_parameters, lr=0.01)

    def base_step(batch):
        loss = base(*batch)
        loss.backward()
        _dense_allreduce(base_dense, WORLD)
        base_opt.step()
        base_opt.zero_grad()

    def hsp_step(batch):
        loss = hsp(*batch)
        loss.backward()
        hsp.finish_backward()
        hsp_opt.step()
        hsp_opt.zero_grad()

    cases = {
        "global": (base_step, CommCounter(topology), []),
        "hsp": (hsp_step, CommCounter(topology), []),
    }
    shape = (
        n_items,
        args.batch,
        args.max_len,
        args.negatives,
        args.id_dist,
        args.zipf_s,
    )
    for step in range(args.warmup + args.steps):
        batch = _batch(step, rank, *shape)
        order = ("global", "hsp") if step % 2 == 0 else ("hsp", "global")
        for name in order:
            fn, counter, times = cases[name]
            dist.barrier()
            start = time.perf_counter()
            if step >= args.warmup:
                with counter:
                    fn(batch)
            else:
                fn(batch)
            times.append(time.perf_counter() - start)

    # Byte model for the last measured step, to check against the wire counts.
    last = [_batch(args.warmup + args.steps - 1, r, *shape) for r in range(WORLD)]
    ids = [{"item": b[0].values(), "target": b[1], "negative": b[2]} for b in last]
    # DMP replaced the tables of the models it sharded; read configs from a fresh one.
    unsharded = _model(n_items)
    modelled = {
        "global": step_traffic(
            layouts_from_plan(base_plan, unsharded),
            ids,
            args.batch,
            topology,
            WORLD,
            hsp_sync=False,
        ),
        "hsp": step_traffic(
            layouts_from_plan(hsp_plan, unsharded),
            ids,
            args.batch,
            topology,
            LOCAL,
            hsp_sync=True,
        ),
    }

    result = {}
    for name, (_, counter, times) in cases.items():
        totals = counter.totals()
        seconds = torch.tensor([sum(counter.seconds.values())], dtype=torch.float64)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        step_s = torch.tensor(
            [statistics.median(times[args.warmup :])], dtype=torch.float64
        )
        dist.all_reduce(step_s, op=dist.ReduceOp.MAX)
        result[name] = {
            "bytes_per_step": {
                c: {t: v / args.steps for t, v in tiers.items()}
                for c, tiers in totals.items()
            },
            "comm_ms": 1e3 * float(seconds) / args.steps,
            "a2a_calls": counter.calls["a2a"] / args.steps,
            "step_ms": 1e3 * float(step_s),
            "modelled_last_step": {
                "a2a": modelled[name].a2a,
                "sync": modelled[name].sync,
            },
            "sharding": {
                n: s.sharding_type
                for plan in ((base_plan,) if name == "global" else (hsp_plan,))
                for n, s in plan.plan["item_embeddings"].items()
            },
        }
    result["dense_param_bytes"] = 4 * sum(p.numel() for p in hsp.dense_parameters)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


def _projection(nodes, args, dense_bytes, id_dist, a2a_calls):
    from torchrec_ascend.planner import (
        TableLayout,
        ascend_910b_nodes,
        latency_hops,
        projected_comm_seconds,
        step_traffic,
    )

    topo = ascend_910b_nodes(nodes)
    world = topo.world_size
    rows = args.proj_items + 1

    def layout(group):
        block = -(-rows // group)
        blocks = tuple((r, r * block, min(rows, (r + 1) * block)) for r in range(group))
        return TableLayout(
            "item", args.proj_dim, False, ("item", "target", "negative"), blocks
        )

    g = torch.Generator().manual_seed(nodes)
    ids = []
    for _ in range(world):
        _, history, targets, negs = _sequence_ids(
            args.proj_batch,
            args.proj_len,
            args.proj_negatives,
            args.proj_items,
            g,
            id_dist,
            args.zipf_s,
        )
        ids.append({"item": history, "target": targets, "negative": negs})
    out = []
    for strategy, group, sync in (("global", world, False), ("hsp", 8, True)):
        traffic = step_traffic([layout(group)], ids, args.proj_batch, topo, group, sync)
        hops = latency_hops(world, group, a2a_calls, sync)
        seconds = projected_comm_seconds(traffic, topo, hops, dense_bytes)
        sparse_only = projected_comm_seconds(traffic, topo, hops, 0)
        bytes_only = projected_comm_seconds(traffic, topo, 0, 0)
        out.append(
            {
                "name": f"projected_{nodes}x8_{id_dist}_{strategy}",
                "world": world,
                "groups": world // group,
                "strategy": strategy,
                "a2a_bytes_intra": traffic.a2a["intra"],
                "a2a_bytes_inter": traffic.a2a["inter"],
                "allreduce_bytes": traffic.sync_total,
                "step_ms": None,
                "comm_ms": None,
                "projected_comm_ms": 1e3 * seconds,
                "projected_sparse_comm_ms": 1e3 * sparse_only,
                "projected_sparse_bandwidth_ms": 1e3 * bytes_only,
            }
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--negatives", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--proj-items", type=int, default=2_000_000)
    parser.add_argument("--proj-dim", type=int, default=128)
    parser.add_argument("--proj-batch", type=int, default=32)
    parser.add_argument("--proj-len", type=int, default=200)
    parser.add_argument("--proj-negatives", type=int, default=128)
    parser.add_argument("--id-dist", choices=("zipf", "uniform"), default="zipf")
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--timeout", type=float, default=400.0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "measured.json")
        ctx = mp.start_processes(
            _rank_main,
            args=(_free_port(), args, out_path),
            nprocs=WORLD,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + args.timeout
        try:
            while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise TimeoutError("benchmark ranks timed out")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
        with open(out_path) as f:
            measured = json.load(f)

    from torchrec_ascend.planner import (
        StepTraffic,
        cpu_hosts,
        latency_hops,
        projected_comm_seconds,
    )

    cases = []
    loopback = cpu_hosts(WORLD // LOCAL, LOCAL)
    for name in ("global", "hsp"):
        m = measured[name]
        b = m["bytes_per_step"]
        traffic = StepTraffic(a2a=b["a2a"], sync=b["sparse_sync"])
        cases.append(
            {
                "name": f"measured_{WORLD}ranks_{args.id_dist}_{name}",
                "world": WORLD,
                "groups": 1 if name == "global" else WORLD // LOCAL,
                "strategy": name,
                "sharding": m["sharding"],
                "a2a_bytes_intra": b["a2a"]["intra"],
                "a2a_bytes_inter": b["a2a"]["inter"],
                "allreduce_bytes": b["sparse_sync"]["intra"]
                + b["sparse_sync"]["inter"],
                "dense_allreduce_bytes": b["dense"]["intra"] + b["dense"]["inter"],
                "step_ms": m["step_ms"],
                "comm_ms": m["comm_ms"],
                "a2a_calls_per_step": m["a2a_calls"],
                "projected_comm_ms": 1e3
                * projected_comm_seconds(
                    traffic,
                    loopback,
                    latency_hops(
                        WORLD,
                        WORLD if name == "global" else LOCAL,
                        round(m["a2a_calls"]),
                        name == "hsp",
                    ),
                    measured["dense_param_bytes"],
                ),
                "modelled_last_step": m["modelled_last_step"],
            }
        )
    for id_dist in ("zipf", "uniform"):
        for nodes in (4, 8, 16):
            cases.extend(
                _projection(
                    nodes,
                    args,
                    measured["dense_param_bytes"],
                    id_dist,
                    round(measured["global"]["a2a_calls"]),
                )
            )

    def drop(key, a, b):
        return 100.0 * (1 - b[key] / a[key]) if a[key] else None

    summary = []
    for i in range(0, len(cases), 2):
        base, hsp = cases[i], cases[i + 1]
        summary.append(
            {
                "case": base["name"].rsplit("_", 1)[0],
                "inter_node_a2a_drop_pct": drop("a2a_bytes_inter", base, hsp),
                "projected_comm_drop_pct": drop("projected_comm_ms", base, hsp),
                "projected_sparse_bandwidth_drop_pct": (
                    drop("projected_sparse_bandwidth_ms", base, hsp)
                    if "projected_sparse_bandwidth_ms" in base
                    else None
                ),
                "measured_comm_drop_pct": drop("comm_ms", base, hsp)
                if base["comm_ms"]
                else None,
            }
        )
    report = {"cases": cases, "summary": summary, "args": vars(args)}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
