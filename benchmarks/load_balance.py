"""Load balancing of jagged batches across data-parallel ranks.

Part 1 simulates 16 ranks over the length distributions of Beauty, MovieLens and a
synthetic KuaiRand-27K-shaped generator: per step, each rank's cost is the training
FLOPs of its samples (``models/flops.py``). The baseline is the fixed-batch random
assignment, measured in the same run. Modelled step time = slowest rank's FLOPs at the
fp32 matmul peak measured in this run.

Part 2 trains a small HSTU for real with 2 and 4 gloo ranks on 127.0.0.1, alternating
baseline and balanced blocks of steps, and reports median step times.

Usage::

    python benchmarks/load_balance.py --json runs/load_balance.json [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from torchrec_ascend.balance import BalancedSampler, SampleCostModel, imbalance
from torchrec_ascend.data import (
    TrainSequences,
    kuairand_like_lengths,
    leave_one_out,
    load_dataset,
)
from torchrec_ascend.models import ZOO, ExperimentConfig, LossConfig, get_preset
from torchrec_ascend.train.peak import measure_matmul_peak

logger = logging.getLogger("benchmarks.load_balance")

SIM_RANKS = 16
PAPER_KUAIRAND_STEP_MS = 1540.0  # TurboGR Table 3, balanced step on 16 NPUs


# -- part 1: simulated ranks -------------------------------------------------------


def _simulate(
    name,
    lengths,
    config,
    local_batch,
    strategy,
    window,
    method,
    seeds,
    max_steps,
    peak_flops,
):
    cost = SampleCostModel(config)
    costs = cost(lengths)
    imbalances, gaps, slowest, wall = [], [], [], 0.0
    partition_s, steps = 0.0, 0
    for seed in seeds:
        sampler = BalancedSampler(
            lengths,
            cost,
            SIM_RANKS,
            0,
            local_batch,
            strategy,
            method,
            seed,
            None,
            window,
        )
        start = time.perf_counter()
        for step, plan in enumerate(sampler.iter_plans()):
            if step >= max_steps:
                break
            loads = np.array([costs[ids].sum() for ids in plan])
            tokens = np.array([lengths[ids].sum() for ids in plan])
            imbalances.append(imbalance(loads))
            gaps.append(int(tokens.max() - tokens.min()))
            slowest.append(loads.max())
            steps += 1
        wall += time.perf_counter() - start
        partition_s += sum(sampler.partition_seconds)
    step_ms = 1000.0 * float(np.mean(slowest)) / peak_flops
    partition_ms = 1000.0 * partition_s / steps
    label = strategy if strategy != "global" else f"global-{method}-w{window}"
    return {
        "name": name,
        "ranks": SIM_RANKS,
        "strategy": label,
        "imbalance": float(np.mean(imbalances)),
        "token_gap": float(np.mean(gaps)),
        "token_gap_max": int(np.max(gaps)),
        "partition_ms": partition_ms,
        "step_ms": step_ms,
        "partition_share_of_step": partition_ms / step_ms,
        "steps": steps,
        "local_batch_size": local_batch,
        "mean_tokens_per_rank": float(lengths.mean() * local_batch),
        "plan_ms_per_step": 1000.0 * wall / steps,
    }


def _train_lengths(dataset_name: str, max_seq_len: int) -> np.ndarray:
    split = leave_one_out(load_dataset(dataset_name))
    data = TrainSequences(split, max_seq_len)
    full = np.array([len(split.train[u]) for u in data.user_index])
    return np.minimum(full - 1, max_seq_len)


def simulated_cases(quick: bool, peak_flops: float) -> list[dict]:
    cases = []
    max_steps = 60 if quick else 10_000
    seeds = [0] if quick else [0, 1, 2]

    def add(name, lengths, config, b, plans, steps=max_steps):
        for strategy, window, method in plans:
            case = _simulate(
                name,
                lengths,
                config,
                b,
                strategy,
                window,
                method,
                seeds,
                steps,
                peak_flops,
            )
            logger.info(
                "%s %s: imbalance %.2f%%, token gap %.0f, partition %.2f ms",
                name,
                case["strategy"],
                100 * case["imbalance"],
                case["token_gap"],
                case["partition_ms"],
            )
            cases.append(case)

    # KuaiRand-27K: 27,285 users, heavy-tailed lengths cut at the zoo's 4096 (and
    # 8192, the interleaved item+action length of a 4096 history); 8 per rank.
    for cap in (4096, 8192):
        config = ExperimentConfig(
            model=dataclasses.replace(ZOO["long"], max_seq_len=cap),
            loss=LossConfig(num_negatives=128),
        )
        lengths = kuairand_like_lengths(27285, cap, seed=0)
        plans = [
            ("fixed", 1, "lpt"),
            ("token_budget", 1, "lpt"),
            ("global", 1, "lpt"),
            ("global", 4, "lpt"),
            ("global", 8, "lpt"),
        ]
        add(f"kuairand-27k-cap{cap}", lengths, config, 8, plans)
        add(
            f"kuairand-27k-cap{cap}",
            lengths,
            config,
            8,
            [("global", 4, "kk")],
            steps=min(max_steps, 64),
        )

    # Short sequences: Beauty (Amazon) with its preset, 128 per rank.
    config = get_preset("beauty")
    lengths = _train_lengths("beauty", config.model.max_seq_len)
    add(
        "beauty",
        lengths,
        config,
        128,
        [("fixed", 1, "lpt"), ("token_budget", 1, "lpt"), ("global", 1, "lpt")],
    )

    # MovieLens latest-small: 610 long-ish histories, 4 per rank.
    config = get_preset("ml-latest-small")
    lengths = _train_lengths("ml-latest-small", config.model.max_seq_len)
    add(
        "ml-latest-small",
        lengths,
        config,
        4,
        [
            ("fixed", 1, "lpt"),
            ("token_budget", 1, "lpt"),
            ("global", 1, "lpt"),
            ("global", 4, "lpt"),
        ],
    )
    return cases


# -- part 2: real gloo ranks -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=dataclasses.replace(
            get_preset("smoke").model,
            embedding_dim=64,
            num_blocks=2,
            num_heads=2,
            attention_dim=32,
            value_dim=32,
            max_seq_len=256,
            dropout=0.0,
            input_dropout=0.0,
        ),
        loss=LossConfig(num_negatives=64, shared_negatives=True),
    )


def _real_worker(rank, world, port, out_dir, steps, reps, local_batch):
    import torch.distributed as dist

    from torchrec_ascend.balance import BalancedTrainBatches, train_lengths
    from torchrec_ascend.data import synthetic_sequence_dataset
    from torchrec_ascend.models import SequentialRetrieval
    from torchrec_ascend.train.distributed import DataParallelStrategy
    from torchrec_ascend.train.negatives import UniformNegativeSampler

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    config = _real_config()
    # KuaiRand-shaped (cap 8192 shape) scaled by 1/32 to lengths <= 256.
    raw = kuairand_like_lengths(4096, 8192, seed=7)
    lengths = np.clip(raw // 32, 3, config.model.max_seq_len + 1)
    split = leave_one_out(synthetic_sequence_dataset(4096, 2000, lengths + 2, 0))
    dataset = TrainSequences(split, config.model.max_seq_len)
    torch.manual_seed(0)
    model = SequentialRetrieval(split.num_items, config, use_timestamps=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    negatives = UniformNegativeSampler(split.num_items, 64, True, seed=rank)
    records = []
    # A discarded warm-up block, then A B B A ... so slow drifts of the shared
    # machine's load hit both strategies alike.
    blocks = [(-1, "fixed")]
    for rep in range(reps):
        pair = ("fixed", "global") if rep % 2 == 0 else ("global", "fixed")
        blocks += [(rep, name) for name in pair]
    strategies = {}
    for rep, strategy_name in blocks:
        if strategy_name not in strategies:
            strategies[strategy_name] = DataParallelStrategy(strategy_name, prefetch=1)
            strategies[strategy_name].prepare(model)
        strategy = strategies[strategy_name]
        sampler = BalancedSampler(
            train_lengths(dataset),
            SampleCostModel(config),
            world,
            rank,
            local_batch,
            strategy_name,
            seed=101 + rep,
            window=4,
            exchange=strategy.exchange,
        )
        batches = BalancedTrainBatches(dataset, sampler, prefetch=1)
        step_ms, compute_ms, tokens = [], [], []
        for step, batch in enumerate(batches):
            if step >= steps:
                break
            dist.barrier()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            if batch.batch_size:
                loss = model(
                    batch.features,
                    batch.targets,
                    negatives.sample(batch.num_tokens),
                    batch.timestamps,
                    batch.query_timestamps,
                )
                loss.backward()
            computed = time.perf_counter()
            strategy.reduce_gradients(model, loss, batch.num_tokens)
            optimizer.step()
            end = time.perf_counter()
            step_ms.append(1000 * (end - start))
            compute_ms.append(1000 * (computed - start))
            tokens.append(batch.num_tokens)
        prefetcher = batches.prefetcher
        records.append(
            {
                "rep": rep,
                "strategy": strategy_name,
                "step_ms": step_ms,
                "compute_ms": compute_ms,
                "tokens": tokens,
                "partition_ms": [1000 * s for s in sampler.partition_seconds],
                "plan_produce_ms": [1000 * s for s in prefetcher.produce_seconds],
                "plan_wait_ms": [1000 * s for s in prefetcher.wait_seconds],
            }
        )
        # Let the planning thread finish before the next strategy's group.
        prefetcher.close()
    torch.save(records, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def real_cases(
    world: int, steps: int, reps: int, local_batch: int, out_dir: Path
) -> list[dict]:
    import torch.multiprocessing as mp

    out_dir.mkdir(parents=True, exist_ok=True)
    context = mp.start_processes(
        _real_worker,
        args=(world, _free_port(), str(out_dir), steps, reps, local_batch),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 600
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError("gloo benchmark ran over 600 s")
    finally:
        for p in context.processes:
            if p.is_alive():
                p.kill()
    per_rank = [torch.load(out_dir / f"rank{r}.pt") for r in range(world)]
    cases = []
    for strategy in ("fixed", "global"):
        step, imb, gap, part, wait, produce = [], [], [], [], [], []
        rep_medians = []
        for k, rec in enumerate(per_rank[0]):
            if rec["strategy"] != strategy or rec["rep"] < 0:
                continue
            recs = [r[k] for r in per_rank]
            # Skip each block's first step: it pays the unhidden first plan.
            times = np.max([r["step_ms"] for r in recs], axis=0)[1:]
            compute = np.array([r["compute_ms"] for r in recs])[:, 1:]
            tokens = np.array([r["tokens"] for r in recs])[:, 1:]
            step += times.tolist()
            rep_medians.append(float(np.median(times)))
            imb += [imbalance(c) for c in compute.T]
            gap += (tokens.max(0) - tokens.min(0)).tolist()
            part += recs[0]["partition_ms"]
            wait += recs[0]["plan_wait_ms"][1:]
            produce += recs[0]["plan_produce_ms"][1:]
        num_steps = len(produce) or 1
        cases.append(
            {
                "name": f"gloo-real-{world}ranks",
                "ranks": world,
                "strategy": strategy if strategy == "fixed" else "global-lpt-w4",
                "imbalance": float(np.mean(imb)),
                "token_gap": float(np.mean(gap)),
                "partition_ms": float(np.sum(part)) / max(len(step), 1),
                "step_ms": float(np.median(step)),
                "step_ms_rep_medians": rep_medians,
                "step_ms_iqr": [
                    float(np.percentile(step, 25)),
                    float(np.percentile(step, 75)),
                ],
                "plan_wait_ms": float(np.mean(wait)) if wait else 0.0,
                "plan_produce_ms": float(np.sum(produce)) / num_steps,
                "local_batch_size": local_batch,
            }
        )
        logger.info(
            "real %d ranks %s: step %.1f ms (IQR %s), compute imbalance "
            "%.1f%%, plan %.2f ms/step, wait %.3f ms",
            world,
            strategy,
            cases[-1]["step_ms"],
            cases[-1]["step_ms_iqr"],
            100 * cases[-1]["imbalance"],
            cases[-1]["plan_produce_ms"],
            cases[-1]["plan_wait_ms"],
        )
    fixed, balanced = cases
    # Same epoch order in both blocks of a repeat: the ratio is paired.
    ratios = [
        f / g
        for f, g in zip(
            fixed["step_ms_rep_medians"], balanced["step_ms_rep_medians"], strict=True
        )
    ]
    balanced["speedup_per_rep"] = ratios
    balanced["speedup_median"] = float(np.median(ratios))
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    p.add_argument("--skip-real", action="store_true", help="simulation only")
    p.add_argument("--real-ranks", type=int, nargs="*", default=[2, 4])
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", force=True
    )

    peak = measure_matmul_peak(torch.float32)
    logger.info("fp32 matmul peak %.1f GFLOP/s", peak)
    cases = simulated_cases(args.quick, peak * 1e9)
    for case in cases:
        if case["name"].startswith("kuairand"):
            case["partition_share_of_paper_step"] = (
                case["partition_ms"] / PAPER_KUAIRAND_STEP_MS
            )
    if not args.skip_real:
        steps, reps = (8, 2) if args.quick else (10, 4)
        for world in args.real_ranks:
            cases += real_cases(
                world, steps, reps, 8, args.json.parent / f"load_balance_gloo{world}"
            )

    summary = {}
    for case in cases:
        key = f"{case['name']}/{case['strategy']}"
        summary[key] = {
            k: case[k] for k in ("imbalance", "token_gap", "partition_ms", "step_ms")
        }
    result = {"peak_gflops": peak, "cases": cases, "summary": summary}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
