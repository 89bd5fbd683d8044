"""Quality of the semi-async pipeline against the sync one on Beauty, same seeds.

For every seed, trains the full Beauty preset twice through the train CLI, once with
``--pipeline sync`` (loss-identical to the plain loop) and once with ``--pipeline
semi-async`` (sparse part one step ahead), two runs at a time with one intra-op thread
each, then compares test metrics at each run's best-validation epoch:

    python benchmarks/pipeline_quality.py --seeds 0 1 2 3 4 \\
        --output-dir runs/pipeline-quality --json runs/pipeline_quality.json

Runs whose ``metrics.json`` already exists are not trained again, so an interrupted
comparison resumes where it stopped. The JSON holds every run's test metrics, the
per-seed relative changes and their mean (``mean_relative_change``, in percent).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger("benchmarks.pipeline_quality")

MODES = ("sync", "semi-async")
METRICS = ("ndcg@10", "hr@10", "ndcg@50", "hr@50", "ndcg@200", "hr@200", "mrr")


def _run_dir(root: Path, mode: str, seed: int) -> Path:
    return root / f"{mode}-s{seed}"


def _train(args: argparse.Namespace, mode: str, seed: int) -> None:
    out = _run_dir(args.output_dir, mode, seed)
    if (out / "metrics.json").exists():
        logger.info("%s seed %d: already trained", mode, seed)
        return
    command = [
        sys.executable,
        "-m",
        "torchrec_ascend.train",
        "--dataset",
        args.dataset,
        "--config",
        args.dataset,
        "--seed",
        str(seed),
        "--pipeline",
        mode,
        "--no-progress",
        "--output-dir",
        str(out),
    ]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    if (out / "last.pt").exists():
        command.append("--resume")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    logger.info("%s seed %d: training", mode, seed)
    with open(out / "train.log", "a") as log:
        subprocess.run(command, env=env, stdout=log, stderr=log, check=True)


def _compare(root: Path, seeds: list[int]) -> dict:
    runs, changes = {}, {m: [] for m in METRICS}
    for seed in seeds:
        test = {}
        for mode in MODES:
            metrics = json.loads(
                (_run_dir(root, mode, seed) / "metrics.json").read_text()
            )
            test[mode] = {k: metrics["test"][k] for k in METRICS}
            test[mode]["best_epoch"] = metrics["best_epoch"]
        runs[str(seed)] = test
        for k in METRICS:
            changes[k].append(100.0 * (test["semi-async"][k] / test["sync"][k] - 1.0))
    summary = {}
    for k in METRICS:
        values = changes[k]
        mean = statistics.mean(values)
        # One seed has no spread to estimate: None, printed as n/a.
        stderr = (
            statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
        )
        sync_mean = statistics.mean(runs[str(s)]["sync"][k] for s in seeds)
        semi_mean = statistics.mean(runs[str(s)]["semi-async"][k] for s in seeds)
        summary[k] = {
            "sync_mean": sync_mean,
            "semi_async_mean": semi_mean,
            "relative_change_of_means": 100.0 * (semi_mean / sync_mean - 1.0),
            "mean_relative_change": mean,
            "stderr_relative_change": stderr,
            "per_seed_relative_change": values,
        }
    return {"seeds": seeds, "runs": runs, "summary": summary}


def _se(value: float | None) -> str:
    return f"{value:6.2f}" if value is not None else "   n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--epochs", type=int, default=None, help="override the preset")
    p.add_argument("--output-dir", type=Path, default=Path("runs/pipeline-quality"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--parallel", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    jobs = [(mode, seed) for seed in args.seeds for mode in MODES]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for future in [pool.submit(_train, args, m, s) for m, s in jobs]:
            future.result()

    result = _compare(args.output_dir, args.seeds)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(f"{'metric':9s} {'sync':>8s} {'semi':>8s} {'change %':>9s} {'+- se':>6s}")
    for k, row in result["summary"].items():
        print(
            f"{k:9s} {row['sync_mean']:8.4f} {row['semi_async_mean']:8.4f} "
            f"{row['mean_relative_change']:9.2f} {_se(row['stderr_relative_change'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
