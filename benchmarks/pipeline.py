"""Throughput of the pipelined train loops against TorchRec's TrainPipelineSparseDist.

Every case trains the same DMP-sharded SequentialRetrieval job (item table row-wise
sharded over gloo ranks on 127.0.0.1, fused row-wise AdaGrad on the table, AdamW on
the dense part) with one loop: TorchRec's ``TrainPipelineSparseDist`` (the baseline),
our ``plain`` loop, and our ``sync`` and ``semi-async`` pipelines. On loopback the
all-to-alls cost almost nothing; ``--link-gbit G`` makes every collective (sparse
all-to-alls and DDP's all-reduce alike, for every loop) complete when a G Gbit/s link
with ``--link-latency-us`` per collective would deliver it (see
``torchrec_ascend.distributed.emulated_link``), the regime a multi-node job is in.
Repetitions are interleaved (baseline, plain, sync, semi-async, baseline, ...) on the
same processes so machine noise hits all loops alike; medians are reported, with the
ratio to the baseline's median.

    python benchmarks/pipeline.py --json runs/pipeline.json

writes ``{"cases": [{"name", "world", "mode", "samples_per_s", "compute_frac",
"exposed_comm_frac", "idle_frac", ...}], ...}``. Fractions are for our loops only
(TorchRec's pipeline has no per-stage timer); ``samples_per_s`` is summed over ranks;
``samples_per_cpu_s`` divides by the CPU time all ranks' processes used (on a shared
machine a loop with more threads can win wall time by taking more of the cores).
``--probe`` also runs TorchRec's semi-sync and prefetch pipelines and its pipeline with
the sharder's id dedup (``use_index_dedup``) once and records how they fail on CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from torchrec_ascend.pipeline.launch import RetrievalJob, run_jobs
from torchrec_ascend.train.peak import measure_matmul_peak

logger = logging.getLogger("benchmarks.pipeline")

LOOPS = ("torchrec", "plain", "sync", "semi-async")
FRACTIONS = ("compute_frac", "exposed_comm_frac", "idle_frac", "comm_frac")


def _job(args: argparse.Namespace, loop: str, world: int) -> RetrievalJob:
    return RetrievalJob(
        loop=loop,
        batches=(args.warmup + args.steps,) * world,
        num_users=args.users,
        num_items=args.items,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        preset=args.preset,
        num_negatives=args.negatives,
        warmup=args.warmup,
        seed=args.seed,
        embedding_dim=args.embedding_dim,
        link_gbit_per_s=args.link_gbit,
        link_latency_us=args.link_latency_us,
    )


def _measure(args: argparse.Namespace, world: int) -> list[dict]:
    jobs = [_job(args, loop, world) for _ in range(args.reps) for loop in LOOPS]
    start = time.perf_counter()
    results = run_jobs(jobs, timeout=args.timeout)
    elapsed = time.perf_counter() - start
    logger.info("world %d: %d jobs in %.0f s", world, len(jobs), elapsed)
    per_loop: dict[str, list[dict]] = {loop: [] for loop in LOOPS}
    for job, ranks in zip(jobs, results):
        # Throughput of the job: all ranks' samples over the slowest rank's time.
        seconds = max(r["seconds"] for r in ranks)
        samples = sum(r["timed_samples"] for r in ranks)
        cpu = sum(r["cpu_seconds"] for r in ranks)
        row = {
            "samples_per_s": samples / seconds if seconds > 0 else 0.0,
            "samples_per_cpu_s": samples / cpu if cpu > 0 else 0.0,
            # Share of the step the emulated link was busy (0 on loopback).
            "link_busy_frac": statistics.mean(
                r.get("link_seconds", 0.0) / seconds if seconds > 0 else 0.0
                for r in ranks
            ),
        }
        if "fractions" in ranks[0]:
            for key in FRACTIONS:
                row[key] = statistics.mean(r["fractions"][key] for r in ranks)
        per_loop[job.loop].append(row)

    base = statistics.median(r["samples_per_s"] for r in per_loop["torchrec"])
    cases = []
    for loop in LOOPS:
        rows = per_loop[loop]
        speeds = [r["samples_per_s"] for r in rows]
        case = {
            "name": f"retrieval-{args.preset}-d{args.embedding_dim or 'preset'}"
            f"-w{world}-{_link_name(args)}-{loop}",
            "world": world,
            "mode": loop,
            "samples_per_s": statistics.median(speeds),
            "samples_per_s_reps": speeds,
            "speedup_vs_torchrec": statistics.median(speeds) / base,
            "samples_per_cpu_s": statistics.median(
                r["samples_per_cpu_s"] for r in rows
            ),
            "link_busy_frac": statistics.median(r["link_busy_frac"] for r in rows),
        }
        for key in FRACTIONS:
            have = key in rows[0]
            case[key] = statistics.median(r[key] for r in rows) if have else None
        cases.append(case)
    return cases


def _link_name(args: argparse.Namespace) -> str:
    if args.link_gbit is None:
        return "loopback"
    return f"link{args.link_gbit:g}g{args.link_latency_us:g}us"


def _probe(args: argparse.Namespace) -> dict[str, str]:
    """How TorchRec's semi-sync, prefetch and index-dedup pipelines fare on CPU."""
    loops = ("torchrec-semi-sync", "torchrec-prefetch", "torchrec-dedup")
    jobs = [_job(args, loop, 2) for loop in loops]
    try:
        results = run_jobs(jobs, timeout=args.timeout)
    except (TimeoutError, RuntimeError) as error:
        return {loop: f"probe did not finish: {error}"[:300] for loop in loops}
    outcome = {}
    for loop, ranks in zip(loops, results):
        if "failed" in ranks[0]:
            outcome[loop] = ranks[0]["failed"]
        else:
            outcome[loop] = f"ran {len(ranks[0]['losses'])} steps"
    return outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", type=Path, default=None, help="write results here")
    p.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="timed steps per rank")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--preset", default="smoke")
    p.add_argument("--users", type=int, default=4000)
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--negatives", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embedding-dim", type=int, default=None, help="override D")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--probe", action="store_true", help="probe TorchRec's others")
    p.add_argument(
        "--link-gbit",
        type=float,
        default=None,
        help="emulate a network link of this many Gbit/s per rank for every "
        "collective (default: plain loopback)",
    )
    p.add_argument("--link-latency-us", type=float, default=30.0, help="per collective")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", force=True
    )

    peak = measure_matmul_peak()
    out: dict = {"matmul_peak_gflops": peak, "settings": vars(args).copy(), "cases": []}
    out["settings"]["json"] = str(args.json)
    for world in args.worlds:
        out["cases"].extend(_measure(args, world))
        _write(args.json, out)
    if args.probe:
        out["torchrec_cpu_probe"] = _probe(args)
    _write(args.json, out)

    print(
        f"{'case':52s} {'samples/s':>10s} {'vs TR':>6s} "
        f"{'comp':>5s} {'exp':>5s} {'idle':>5s} {'smp/cpu-s':>9s} {'link':>5s}"
    )
    for c in out["cases"]:
        fr = [
            f"{c[k]:5.2f}" if c[k] is not None else "    -"
            for k in ("compute_frac", "exposed_comm_frac", "idle_frac")
        ]
        print(
            f"{c['name']:52s} {c['samples_per_s']:10.1f} "
            f"{c['speedup_vs_torchrec']:6.2f} {' '.join(fr)} "
            f"{c['samples_per_cpu_s']:9.1f} {c['link_busy_frac']:5.2f}"
        )
    if "torchrec_cpu_probe" in out:
        for loop, outcome in out["torchrec_cpu_probe"].items():
            print(f"{loop}: {outcome}")
    return 0


def _write(path: Path | None, out: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
