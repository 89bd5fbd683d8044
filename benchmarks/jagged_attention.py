"""Jagged HSTU attention: fused CPU kernel vs padded PyTorch, in one run.

Variants, all with the same inputs (position + time RAB, causal):

* ``padded``: native PyTorch operators on the batch padded to its longest sequence
  (the baseline of the reference design's 2.2x / 70% claim).
* ``fused``: the C++ jagged kernel (``torch.ops.torchrec_ascend.hstu_attention``).
* ``generic``: the device-generic ATen kernel on length buckets.
* ``fbgemm``: fbgemm-cpu ``jagged_to_padded_dense`` / ``dense_to_jagged`` around the
  padded attention.

Every measurement runs in a fresh subprocess (one per variant and repetition, the
variants interleaved within each repetition), which times one forward (no grad) and
one forward+backward after a tiny warm-up, and reports its peak resident memory
(``ru_maxrss``) minus the resident peak just before the measured calls: the same
memory measure for every variant. Medians over repetitions are reported, with the
fp32/bf16 matmul peak (``torch.mm`` on 2048^2) measured in the same run.

Usage::

    python benchmarks/jagged_attention.py --json /tmp/jagged.json
    python benchmarks/jagged_attention.py --quick   # seconds-long smoke run
"""

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

logger = logging.getLogger("jagged_attention")

VARIANTS = ("padded", "fused", "generic", "fbgemm")
HEADS, DIM = 8, 16
NUM_TIME_BUCKETS = 128


def _case_lengths(spec: dict) -> np.ndarray:
    if spec["source"] == "kuairand":
        from torchrec_ascend.data import kuairand_like_lengths

        return kuairand_like_lengths(spec["batch"], spec["max_len"], seed=spec["seed"])
    from torchrec_ascend.data import load_dataset

    lengths = load_dataset(spec["source"]).lengths()
    rng = np.random.default_rng(spec["seed"])
    picked = rng.choice(lengths, size=spec["batch"], replace=False)
    return np.minimum(picked, spec["max_len"])


def _make_inputs(spec: dict, lengths: np.ndarray, dtype: torch.dtype):
    from torchrec_ascend.ops import lengths_to_offsets

    offsets = lengths_to_offsets(torch.as_tensor(lengths, dtype=torch.int64))
    total, cap = int(offsets[-1]), spec["max_len"]
    gen = torch.Generator().manual_seed(spec["seed"])

    def rand(*shape, scale=1.0):
        t = scale * torch.randn(*shape, generator=gen)
        return t.to(dtype).requires_grad_()

    q, k, v = (rand(total, HEADS, DIM) for _ in range(3))
    timestamps = torch.cumsum(torch.randint(1, 3600, (total,), generator=gen), 0)
    kwargs = dict(
        pos_bias=rand(2 * cap - 1, scale=0.02),
        ts_bias=rand(NUM_TIME_BUCKETS + 1, scale=0.02),
        timestamps=timestamps,
        query_timestamps=timestamps + 60,
    )
    grad_out = torch.randn(total, HEADS, DIM, generator=gen).to(dtype)
    return (q, k, v, offsets, cap), kwargs, grad_out


def _fbgemm_attention(q, k, v, offsets, max_seq_len, **kwargs):
    import fbgemm_gpu  # noqa: F401  (loads torch.ops.fbgemm)

    from torchrec_ascend.ops import segment_ids
    from torchrec_ascend.ops.hstu_dense import dense_hstu_attention

    lengths = (offsets[1:] - offsets[:-1]).long()
    width = int(lengths.max())

    def pad(t):
        flat = t.reshape(t.shape[0], -1)
        dense = torch.ops.fbgemm.jagged_to_padded_dense(flat, [offsets], [width])
        return dense.reshape(dense.shape[0], width, *t.shape[1:])

    # fbgemm's CPU jagged_to_padded_dense takes floating values only, and float32
    # cannot hold these timestamps exactly, so they are padded with index_put.
    rows = segment_ids(offsets, q.shape[0])
    cols = torch.arange(q.shape[0]) - offsets[rows]

    def pad_times(t):
        return t.new_zeros(lengths.numel(), width).index_put((rows, cols), t)

    out = dense_hstu_attention(
        pad(q),
        pad(k),
        pad(v),
        lengths,
        max_seq_len,
        1.0,
        kwargs["pos_bias"],
        kwargs["ts_bias"],
        pad_times(kwargs["timestamps"]),
        pad_times(kwargs["query_timestamps"]),
    )
    flat = out.reshape(out.shape[0], width, -1)
    values = torch.ops.fbgemm.dense_to_jagged(flat, [offsets])[0]
    return values.reshape(q.shape[0], HEADS, -1)


def _variant_fn(name: str):
    from torchrec_ascend.ops import hstu_attention
    from torchrec_ascend.ops.hstu_dense import padded_hstu_attention

    if name == "padded":
        return padded_hstu_attention
    if name == "fused":
        return lambda *a, **kw: hstu_attention(*a, backend="cpp", **kw)
    if name == "generic":
        return lambda *a, **kw: hstu_attention(*a, backend="generic", **kw)
    if name == "fbgemm":
        return _fbgemm_attention
    raise ValueError(f"unknown variant {name!r}")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


class PeakMemory:
    """Peak resident memory of a block minus the resident memory when it started.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``) so each block is
    measured alone; where that is not allowed it falls back to ``ru_maxrss``, whose
    growth over the block is a lower bound of the same quantity.
    """

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.exact = True
            self.start = _status_mb("VmRSS")
        except OSError:
            self.exact = False
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return self

    def __exit__(self, *exc):
        if self.exact:
            self.peak_mb = _status_mb("VmHWM") - self.start
        else:
            now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            self.peak_mb = now - self.start


def run_one(spec: dict, variant: str, dtype_name: str) -> dict:
    """Measures one variant in this (fresh) process; see the module docstring."""
    import torchrec_ascend  # noqa: F401

    dtype = getattr(torch, dtype_name)
    fn = _variant_fn(variant)
    small = dict(spec, batch=2, max_len=64, source="kuairand")
    args, kwargs, grad_out = _make_inputs(small, _case_lengths(small), dtype)
    fn(*args, **kwargs).backward(grad_out)  # warm-up: thread pools, BLAS, dispatch

    args, kwargs, grad_out = _make_inputs(spec, _case_lengths(spec), dtype)
    with PeakMemory() as forward_memory, torch.no_grad():
        start = time.perf_counter()
        fn(*args, **kwargs)
        forward_ms = 1e3 * (time.perf_counter() - start)
    with PeakMemory() as train_memory:
        start = time.perf_counter()
        fn(*args, **kwargs).backward(grad_out)
        train_ms = 1e3 * (time.perf_counter() - start)
    return dict(
        fwd_ms=forward_ms,
        ms=train_ms,
        fwd_peak_mb=forward_memory.peak_mb,
        peak_mb=train_memory.peak_mb,
        exact_peak=float(train_memory.exact),
    )


def _subprocess(spec: dict, variant: str, dtype_name: str, timeout: float) -> dict:
    payload = json.dumps(dict(spec=spec, variant=variant, dtype=dtype_name))
    done = subprocess.run(
        [sys.executable, __file__, "--child", payload],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} {spec['name']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


def attention_flops(lengths: np.ndarray) -> float:
    """Forward+backward matmul FLOPs of the causal jagged attention (3x forward)."""
    from torchrec_ascend.models.flops import attention_pairs

    pairs = attention_pairs(torch.as_tensor(lengths))
    return 3.0 * 2.0 * pairs * HEADS * (DIM + DIM)


def default_cases(quick: bool) -> list[dict]:
    if quick:
        return [
            dict(name="kuairand-256", source="kuairand", batch=4, max_len=256, seed=0),
            dict(name="beauty-50", source="beauty", batch=128, max_len=50, seed=0),
        ]
    return [
        # Short-history datasets first: they take seconds.
        dict(name="beauty-50", source="beauty", batch=128, max_len=50, seed=0),
        dict(
            name="movielens-200",
            source="ml-latest-small",
            batch=128,
            max_len=200,
            seed=0,
        ),
        # Batches sized so the padded baseline runs in about a minute on 2 shared
        # cores.
        dict(name="kuairand-2048", source="kuairand", batch=4, max_len=2048, seed=0),
        dict(name="kuairand-4096", source="kuairand", batch=2, max_len=4096, seed=0),
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the summary here")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny smoke cases")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--cases", default="", help="comma-separated case names")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--table", nargs="+", help="print a markdown table of these JSON files and exit"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(args.table))
        return {}
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(run_one(job["spec"], job["variant"], job["dtype"])))
        return {}
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from torchrec_ascend.ops.hstu_generic import padding_waste, plan_length_buckets

    peaks = {
        "fp32": matmul_peak_gflops(torch.float32),
        "bf16": matmul_peak_gflops(torch.bfloat16),
    }
    logger.info("matmul peak GFLOP/s: %s", {k: round(v, 1) for k, v in peaks.items()})
    wanted = set(filter(None, args.cases.split(",")))
    cases = []
    for spec in default_cases(args.quick):
        if wanted and spec["name"] not in wanted:
            continue
        lengths = _case_lengths(spec)
        waste = padding_waste(lengths.tolist(), plan_length_buckets(lengths.tolist()))
        for dtype_name in args.dtypes.split(","):
            runs = {v: [] for v in VARIANTS}
            reps = min(args.reps, spec.get("reps", args.reps))
            for rep in range(reps):
                for variant in VARIANTS:
                    result = _subprocess(spec, variant, dtype_name, args.timeout)
                    runs[variant].append(result)
                    logger.info(
                        "%s %s rep %d %s: %s",
                        spec["name"],
                        dtype_name,
                        rep,
                        variant,
                        {k: round(x, 1) for k, x in result.items()},
                    )

            def median(variant, key, runs=runs):
                return statistics.median(r[key] for r in runs[variant])

            padded_ms, fused_ms = median("padded", "ms"), median("fused", "ms")
            padded_mb, fused_mb = (
                median("padded", "peak_mb"),
                median("fused", "peak_mb"),
            )
            peak = peaks["bf16" if dtype_name == "bfloat16" else "fp32"]
            fused_gflops = attention_flops(lengths) / (fused_ms / 1e3) / 1e9
            case = dict(
                name=spec["name"],
                dtype=dtype_name,
                batch=spec["batch"],
                max_len=spec["max_len"],
                tokens=int(lengths.sum()),
                heads=HEADS,
                dim=DIM,
                padded_ms=padded_ms,
                fused_ms=fused_ms,
                generic_ms=median("generic", "ms"),
                fbgemm_ms=median("fbgemm", "ms"),
                padded_fwd_ms=median("padded", "fwd_ms"),
                fused_fwd_ms=median("fused", "fwd_ms"),
                generic_fwd_ms=median("generic", "fwd_ms"),
                fbgemm_fwd_ms=median("fbgemm", "fwd_ms"),
                speedup=padded_ms / fused_ms,
                generic_speedup=padded_ms / median("generic", "ms"),
                padded_peak_mb=padded_mb,
                fused_peak_mb=fused_mb,
                generic_peak_mb=median("generic", "peak_mb"),
                fbgemm_peak_mb=median("fbgemm", "peak_mb"),
                memory_reduction=1.0 - fused_mb / padded_mb,
                fused_gflops=fused_gflops,
                fused_peak_fraction=fused_gflops / peak,
                reps=reps,
                generic_padding_waste=waste,
            )
            cases.append(case)
            _write_summary(args.json, peaks, args.reps, cases)
            logger.info(
                "%s %s: speedup %.2fx, memory -%.0f%%, generic %.2fx, waste %.1f%%",
                spec["name"],
                dtype_name,
                case["speedup"],
                100 * case["memory_reduction"],
                case["generic_speedup"],
                100 * waste,
            )
    summary = _write_summary(args.json, peaks, args.reps, cases)
    print(json.dumps(summary, indent=2))
    return summary


def markdown_table(paths: list[str]) -> str:
    """The README table of one or more summaries written by ``--json``."""
    lines = [
        "| case | dtype | B | tokens | padded ms | fused ms | generic ms | fbgemm ms "
        "| speedup | generic vs padded | padded MB | fused MB | generic MB "
        "| mem. reduction | fused GFLOP/s (% peak) | bucket waste |",
        "|" + "---|" * 16,
    ]
    for path in paths:
        with open(path) as f:
            summary = json.load(f)
        for c in summary["cases"]:
            lines.append(
                f"| {c['name']} | {c['dtype']} | {c['batch']} | {c['tokens']} "
                f"| {c['padded_ms']:.0f} | {c['fused_ms']:.0f} | {c['generic_ms']:.0f} "
                f"| {c['fbgemm_ms']:.0f} | {c['speedup']:.1f}x "
                f"| {c['generic_speedup']:.2f}x | {c['padded_peak_mb']:.0f} "
                f"| {c['fused_peak_mb']:.1f} | {c['generic_peak_mb']:.0f} "
                f"| {100 * c['memory_reduction']:.1f}% | {c['fused_gflops']:.2f} "
                f"({100 * c['fused_peak_fraction']:.0f}%) "
                f"| {100 * c['generic_padding_waste']:.1f}% |"
            )
        peaks = summary["peak_gflops"]
        lines.append(
            f"\n`{path}`: matmul peak fp32 {peaks['fp32']:.1f}, bf16 "
            f"{peaks['bf16']:.1f} GFLOP/s, {summary['threads']} threads, "
            f"medians of {summary['reps']} reps."
        )
    return "\n".join(lines)


def _write_summary(path, peaks, reps, cases) -> dict:
    # Rewritten after every case so a long run leaves its finished cases behind.
    summary = dict(
        peak_gflops=peaks, threads=torch.get_num_threads(), reps=reps, cases=cases
    )
    if path:
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
