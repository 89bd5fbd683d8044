"""Negative sampling at scale: loss-step memory, quality on Beauty, sampling timing.

    python benchmarks/negatives.py --json runs/negatives.json            # all parts
    python benchmarks/negatives.py --memory --json runs/negatives_mem.json
    python benchmarks/negatives.py --quality --epochs 15 --seeds 0 1 2 --json ...
    python benchmarks/negatives.py --timing --json ...

Memory: every (negatives, strategy) cell runs one loss step (item-table lookup of the
per-token negatives, sampled softmax, backward into the table) and reports the rise
of the process's peak resident set (VmHWM, reset before each step through
/proc/self/clear_refs) over the resident set before the step. glibc is told to
serve every large block with mmap (MALLOC_MMAP_THRESHOLD_), so freed tensors leave
the resident set at once and the peak is the peak of live tensors. Each repetition
is a fresh process running every cell, in alternating order; medians are reported.

Quality: the Beauty preset with per-token negatives (the setting these features are
for), several seeds per variant, the same epochs for every variant; NDCG@10/HR@10
on test with the best-validation weights.

Timing: per-stage times of Beauty training steps with negatives drawn inline (on
the step's critical path) vs by the background sampler.
"""

import argparse
import dataclasses
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger("benchmarks.negatives")

STRATEGIES = {
    # name: (offload_negatives, negative_dtype, segment_size or None = all tokens)
    "baseline": (False, "float32", None),
    "fp16": (True, "float16", None),
    "offload": (True, "float32", 256),
    "offload+fp16": (True, "float16", 256),
}


# -- memory ------------------------------------------------------------------------


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM (the peak resident set) to VmRSS.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _memory_child(args) -> None:
    """Runs the listed cells in this (fresh) process; prints one JSON line each."""
    from torchrec.modules.embedding_configs import EmbeddingConfig
    from torchrec.modules.embedding_modules import EmbeddingCollection
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from torchrec_ascend.models.losses import SampledSoftmaxLoss

    torch.manual_seed(0)
    tokens, dim = args.tokens, args.dim
    table = EmbeddingCollection(
        tables=[
            EmbeddingConfig(
                name="item",
                embedding_dim=dim,
                num_embeddings=args.num_items + 1,
                feature_names=["negative"],
            )
        ]
    )

    def step(num_tokens: int, negatives: int, strategy: str) -> tuple[float, float]:
        offload, dtype_name, segment = STRATEGIES[strategy]
        loss_fn = SampledSoftmaxLoss(
            0.05,
            negative_dtype=dtype_name,
            offload_negatives=offload,
            segment_size=segment or max(num_tokens, 1),
        )
        queries = F.normalize(torch.randn(num_tokens, dim), dim=-1).requires_grad_()
        positives = F.normalize(torch.randn(num_tokens, dim), dim=-1)
        positive_ids = torch.randint(1, args.num_items + 1, (num_tokens,))
        negative_ids = torch.randint(1, args.num_items + 1, (num_tokens, negatives))
        kjt = KeyedJaggedTensor.from_lengths_sync(
            ["negative"], negative_ids.reshape(-1), torch.tensor([negative_ids.numel()])
        )
        table.zero_grad(set_to_none=False)
        _reset_peak_rss()
        before = _rss_kib("VmRSS")
        start = time.perf_counter()
        rows = table(kjt)["negative"].values().reshape(num_tokens, negatives, dim)
        loss = loss_fn(queries, positives, positive_ids, rows, negative_ids)
        del rows
        loss.backward()
        elapsed = time.perf_counter() - start
        return (_rss_kib("VmHWM") - before) / 1024.0, elapsed

    # Warm-up at a small size: libraries, thread pools and the table gradient
    # buffer are allocated outside the measured steps.
    for strategy in STRATEGIES:
        step(64, 8, strategy)
    for cell in args.cells.split(","):
        negatives, strategy = cell.split(":")
        peak, elapsed = step(tokens, int(negatives), strategy)
        print(json.dumps({"cell": cell, "peak_mb": peak, "seconds": elapsed}))


def _tensor_mb(tokens: int, negatives: int, dim: int) -> float:
    return tokens * negatives * dim * 4 / 2**20


def run_memory(args) -> list[dict]:
    # Every large block is mmap-ed, so a freed tensor leaves the resident set.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cells = [(r, s) for r in args.negatives for s in STRATEGIES]
    samples: dict = {cell: [] for cell in cells}
    for rep in range(args.repeats):
        # A fresh process per repetition; cell order alternates between them.
        order = cells if rep % 2 == 0 else cells[::-1]
        command = [
            sys.executable,
            __file__,
            "--memory-child",
            "--cells",
            ",".join(f"{r}:{s}" for r, s in order),
            "--tokens",
            str(args.tokens),
            "--dim",
            str(args.dim),
            "--num-items",
            str(args.num_items),
        ]
        out = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=1800
        )
        if out.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{out.stderr[-3000:]}")
        for line in out.stdout.strip().splitlines():
            result = json.loads(line)
            negatives, strategy = result["cell"].split(":")
            samples[(int(negatives), strategy)].append(result)
            logger.info(
                "rep %d R=%s %-13s peak %.0f MB, %.2f s",
                rep,
                negatives,
                strategy,
                result["peak_mb"],
                result["seconds"],
            )
    rows = []
    for negatives, strategy in cells:
        runs = samples[(negatives, strategy)]
        rows.append(
            {
                "negatives": negatives,
                "strategy": strategy,
                "peak_mb": statistics.median(r["peak_mb"] for r in runs),
                "step_seconds": statistics.median(r["seconds"] for r in runs),
                "negative_tensor_mb": _tensor_mb(args.tokens, negatives, args.dim),
                "tokens": args.tokens,
                "dim": args.dim,
            }
        )
    for row in rows:
        base = next(
            r["peak_mb"]
            for r in rows
            if r["negatives"] == row["negatives"] and r["strategy"] == "baseline"
        )
        row["vs_baseline"] = row["peak_mb"] / base
    return rows


# -- quality -----------------------------------------------------------------------

# Per-token negatives, offloaded (segmented) logits: the setting of the issue.
QUALITY_VARIANTS = {
    "128_fp32": dict(num_negatives=128),
    "128_fp16": dict(num_negatives=128, negative_dtype="float16"),
    "64_k2": dict(num_negatives=64, logit_sharing=2),
    "64": dict(num_negatives=64),
}


def _beauty_config(epochs: int, **loss_overrides):
    from torchrec_ascend.models import get_preset

    base = get_preset("beauty")
    loss = dataclasses.replace(
        base.loss, shared_negatives=False, offload_negatives=True, **loss_overrides
    )
    train = dataclasses.replace(base.train, epochs=epochs)
    return dataclasses.replace(base, loss=loss, train=train)


def run_quality(args) -> list[dict]:
    from torchrec_ascend.data import leave_one_out, load_dataset
    from torchrec_ascend.train.loop import RunSpec, train

    split = leave_one_out(load_dataset("beauty", root=args.data_root))
    rows = []
    out_root = Path(tempfile.mkdtemp(prefix="negatives-quality-"))
    # Seeds outer, variants inner: machine-load drift hits every variant alike.
    for seed in args.seeds:
        for variant in args.variants:
            config = _beauty_config(args.epochs, **QUALITY_VARIANTS[variant])
            spec = RunSpec(
                dataset="beauty",
                split=split,
                config=config,
                seed=seed,
                output_dir=out_root / f"{variant}-{seed}",
                progress=False,
            )
            start = time.perf_counter()
            metrics = train(spec)
            row = {
                "variant": variant,
                "seed": seed,
                "ndcg@10": metrics["test"]["ndcg@10"],
                "hr@10": metrics["test"]["hr@10"],
                "valid_ndcg@10": metrics["valid"]["ndcg@10"],
                "valid_hr@10": metrics["valid"]["hr@10"],
                "best_epoch": metrics["best_epoch"],
                "epochs": args.epochs,
                "step_time_ms": metrics["train"]["step_time_ms"],
                "wall_seconds": time.perf_counter() - start,
            }
            rows.append(row)
            logger.info("quality %s", json.dumps(row))
            if args.json:
                _write(args.json, {"quality": rows}, merge=True)
    return rows


def summarize_quality(rows: list[dict]) -> dict:
    """Mean and sample std of test NDCG@10/HR@10 per variant, and relative deltas."""
    summary = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        vals = [r for r in rows if r["variant"] == variant]
        entry = {"seeds": len(vals)}
        for metric in ("ndcg@10", "hr@10"):
            xs = [r[metric] for r in vals]
            entry[metric] = statistics.mean(xs)
            entry[metric + "_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        summary[variant] = entry
    for variant, reference in (("128_fp16", "128_fp32"), ("64_k2", "128_fp32")):
        if variant in summary and reference in summary:
            for metric in ("ndcg@10", "hr@10"):
                ref = summary[reference][metric]
                summary[variant][metric + "_rel_change"] = (
                    summary[variant][metric] - ref
                ) / ref
    return summary


# -- timing ------------------------------------------------------------------------


def run_timing(args) -> dict:
    from torchrec_ascend.data import leave_one_out, load_dataset, make_train_loader
    from torchrec_ascend.models import SequentialRetrieval
    from torchrec_ascend.negatives import sample_valid_positions
    from torchrec_ascend.train.negatives import UniformNegativeSampler

    split = leave_one_out(load_dataset("beauty", root=args.data_root))
    config = _beauty_config(1, num_negatives=128)
    torch.manual_seed(0)
    model = SequentialRetrieval(split.num_items, config, split.has_timestamps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def train_step(batch, negative_ids) -> None:
        loss = model(
            batch.features,
            batch.targets,
            negative_ids,
            batch.timestamps,
            batch.query_timestamps,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    per_mode: dict = {"inline": [], "background": []}
    for rep in range(args.repeats):
        for mode in ("inline", "background"):
            loader = make_train_loader(
                split, config.model.max_seq_len, config.train.batch_size, rep, 0
            )
            sampler = UniformNegativeSampler(split.num_items, 128, False, seed=rep)
            load_s = sample_s = step_s = wait_s = 0.0
            steps = 0
            if mode == "inline":
                batches = iter(loader)
                while steps < args.timing_steps:
                    t0 = time.perf_counter()
                    batch = next(batches, None)
                    if batch is None:
                        break
                    t1 = time.perf_counter()
                    negative_ids = sampler.sample_batch(batch)
                    t2 = time.perf_counter()
                    train_step(batch, negative_ids)
                    if steps > 0:  # like the background path: no first batch
                        load_s += t1 - t0
                        sample_s += t2 - t1
                    step_s += time.perf_counter() - t2
                    steps += 1
            else:
                prefetched = sampler.in_background(loader)
                for batch, negative_ids in prefetched:
                    t1 = time.perf_counter()
                    train_step(batch, negative_ids)
                    step_s += time.perf_counter() - t1
                    steps += 1
                    if steps == args.timing_steps:
                        break
                stats = prefetched.stats
                # Only the steps consumed count; the worker may have run ahead.
                share = steps / max(stats.batches, 1)
                load_s = stats.load_seconds * share
                sample_s = stats.sample_seconds * share
                # Steady state: the one-off wait for the first batch is excluded
                # (it is also excluded on the inline path below).
                wait_s = stats.wait_seconds
            per_mode[mode].append(
                {
                    "load_ms": 1000 * load_s / steps,
                    "sample_ms": 1000 * sample_s / steps,
                    "step_ms": 1000 * step_s / steps,
                    # Loading and sampling time the step had to wait for.
                    "critical_path_ms": 1000
                    * ((load_s + sample_s) if mode == "inline" else wait_s)
                    / steps,
                }
            )
            logger.info("timing rep %d %s %s", rep, mode, per_mode[mode][-1])

    result = {}
    for mode, reps in per_mode.items():
        entry = {key: statistics.median(r[key] for r in reps) for key in reps[0]}
        on_path = entry["critical_path_ms"]
        entry["critical_path_share"] = on_path / (on_path + entry["step_ms"])
        entry["sample_share_of_step"] = entry["sample_ms"] / entry["step_ms"]
        result[mode] = entry

    # Sampling throughput at the scale of the memory benchmark.
    lengths = torch.full((args.tokens // 1024,), 1024)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        sample_valid_positions(lengths, 128, args.num_items, gen)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    result["at_scale"] = {
        "tokens": int(lengths.sum()),
        "negatives": 128,
        "sample_ms": 1000 * seconds,
        "ids_per_s": int(lengths.sum()) * 128 / seconds,
    }
    return result


def merge_results(paths: list[Path]) -> dict:
    """Concatenates the quality rows of several outputs, keeps the other parts."""
    merged: dict = {"quality": []}
    for path in paths:
        data = json.loads(path.read_text())
        merged["quality"].extend(data.pop("quality", []))
        data.pop("quality_summary", None)
        merged.update(data)
    merged["quality"].sort(key=lambda r: (r["variant"], r["seed"]))
    if merged["quality"]:
        merged["quality_summary"] = summarize_quality(merged["quality"])
    return merged


_EPOCH_LINE = re.compile(r"epoch (\d+) loss \S+ valid ndcg@10 (\S+) hr@10 (\S+)")
_LOG_NAME = re.compile(r"quality_(.+)_seed(\d+)\.log$")


def rows_from_logs(paths: list[Path]) -> list[dict]:
    """Validation NDCG@10/HR@10 of unfinished quality runs, at the last epoch that
    every run reached (logs named ``quality_<variant>_seed<seed>.log``).

    Used when the machine is too loaded for the runs to finish: the comparison
    stays like for like because every run is read at the same epoch.
    """
    curves = {}
    for path in paths:
        match = _LOG_NAME.search(path.name)
        if match is None:
            raise ValueError(f"{path}: expected quality_<variant>_seed<seed>.log")
        curves[(match.group(1), int(match.group(2)))] = {
            int(m.group(1)): (float(m.group(2)), float(m.group(3)))
            for m in _EPOCH_LINE.finditer(path.read_text())
        }
    common = min(max(curve, default=0) for curve in curves.values())
    if common == 0:
        raise ValueError("some run has not finished its first epoch")
    return [
        {
            "variant": variant,
            "seed": seed,
            "ndcg@10": curve[common][0],
            "hr@10": curve[common][1],
            "split": "valid",
            "epoch": common,
        }
        for (variant, seed), curve in sorted(curves.items())
    ]


# -- driver ------------------------------------------------------------------------


def _write(path: Path, data: dict, merge: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if merge and path.exists():
        old = json.loads(path.read_text())
        old.update(data)
        data = old
    path.write_text(json.dumps(data, indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--memory", action="store_true", help="run the memory part")
    p.add_argument("--quality", action="store_true", help="run the quality part")
    p.add_argument("--timing", action="store_true", help="run the timing part")
    p.add_argument("--negatives", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--num-items", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(QUALITY_VARIANTS),
        choices=QUALITY_VARIANTS,
    )
    p.add_argument("--timing-steps", type=int, default=40)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="combine these JSON outputs (runs split by seed/variant) into --json; "
        "quality_<variant>_seed<seed>.log files instead give validation metrics at "
        "the last epoch every run reached",
    )
    # Internal: one memory cell in a fresh process.
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cells", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        _memory_child(args)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.merge:
        logs = [path for path in args.merge if path.suffix == ".log"]
        merged = merge_results([path for path in args.merge if path not in logs])
        if logs:
            merged["quality"] = rows_from_logs(logs)
            merged["quality_summary"] = summarize_quality(merged["quality"])
        if args.json:
            _write(args.json, merged, merge=False)
        print(json.dumps(merged.get("quality_summary", {}), indent=2))
        return 0
    everything = not (args.memory or args.quality or args.timing)
    result: dict = {}
    if args.memory or everything:
        result["memory"] = run_memory(args)
        if args.json:
            _write(args.json, {"memory": result["memory"]}, merge=True)
    if args.timing or everything:
        result["timing"] = run_timing(args)
        if args.json:
            _write(args.json, {"timing": result["timing"]}, merge=True)
    if args.quality or everything:
        result["quality"] = run_quality(args)
        result["quality_summary"] = summarize_quality(result["quality"])
        if args.json:
            _write(
                args.json,
                {
                    "quality": result["quality"],
                    "quality_summary": result["quality_summary"],
                },
                merge=True,
            )
    print(json.dumps({k: v for k, v in result.items() if k != "quality"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
