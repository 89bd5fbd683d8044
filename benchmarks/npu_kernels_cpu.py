"""Cost of the device-generic NPU kernels, measured on CPU against fbgemm's CPU kernels.

The NPU kernels are ATen compositions (searchsorted, index_select, unique, ...). No
NPU is available here, so this measures what the generic formulation costs relative
to fbgemm's hand-written CPU kernels on the same inputs, interleaving repetitions and
reporting medians. It says nothing about NPU speed.

Usage: python benchmarks/npu_kernels_cpu.py [--reps 15] [--threads 1] [--out f.json]
"""

import argparse
import json
import statistics
import time

import fbgemm_gpu  # noqa: F401
import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
    EmbeddingLocation,
    PoolingMode,
)
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.npu import jagged_kernels, npu_fused_forward, sparse_kernels

FB = torch.ops.fbgemm


def _cases(gen):
    features, batch, dim = 8, 512, 64
    lengths = torch.randint(0, 40, (features, batch), generator=gen)
    values = torch.randint(0, 100_000, (int(lengths.sum()),), generator=gen)
    permute = torch.randperm(features, generator=gen).int()
    seq_lengths = torch.randint(0, 200, (batch,), generator=gen)
    offsets = FB.asynchronous_complete_cumsum(seq_lengths)
    rows = torch.randn(int(seq_lengths.sum()), dim, generator=gen)

    def tbe():
        module = SplitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[(50_000, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)],
            feature_table_map=[0, 0],
            pooling_mode=PoolingMode.NONE,
            optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
            learning_rate=0.05,
        )
        return module

    ids = torch.randint(0, 50_000, (2 * 8192,), generator=gen)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["a", "b"], ids, torch.full((2 * 256,), 32, dtype=torch.int64)
    )
    upstream = torch.randn(ids.numel(), dim, generator=gen)
    tbe_fbgemm, tbe_ours = tbe(), tbe()

    def step(module, forward):
        out = forward(module, kjt)
        (out * upstream).sum().backward()

    return {
        "permute_2D_sparse_data": (
            lambda: FB.permute_2D_sparse_data(permute, lengths, values),
            lambda: sparse_kernels.permute_2D_sparse_data(permute, lengths, values),
        ),
        "jagged_to_padded_dense_forward": (
            lambda: FB.jagged_to_padded_dense_forward(rows, [offsets], [200]),
            lambda: jagged_kernels.jagged_to_padded_dense_forward(
                rows, [offsets], [200]
            ),
        ),
        "asynchronous_complete_cumsum": (
            lambda: FB.asynchronous_complete_cumsum(lengths.reshape(-1)),
            lambda: sparse_kernels.asynchronous_complete_cumsum(lengths.reshape(-1)),
        ),
        "fused_lookup_step_rowwise_adagrad": (
            lambda: step(
                tbe_fbgemm, lambda m, k: m(indices=k.values(), offsets=k.offsets())
            ),
            lambda: step(tbe_ours, npu_fused_forward),
        ),
    }


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", default=None)
    # One thread by default: on a shared, oversubscribed host, ATen's OpenMP
    # threads spin against other jobs while fbgemm's CPU kernels mostly run serially.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cases = _cases(torch.Generator().manual_seed(0))
    summary = {"threads": torch.get_num_threads(), "reps": args.reps, "ops": {}}
    for name, (fbgemm_fn, ours_fn) in cases.items():
        fbgemm_fn(), ours_fn()  # warm-up
        fbgemm_s, ours_s = [], []
        for _ in range(args.reps):  # interleaved, so load noise hits both alike
            fbgemm_s.append(_time(fbgemm_fn))
            ours_s.append(_time(ours_fn))
        fb, us = statistics.median(fbgemm_s), statistics.median(ours_s)
        summary["ops"][name] = {
            "fbgemm_cpu_ms": round(fb * 1e3, 3),
            "generic_aten_ms": round(us * 1e3, 3),
            "generic_over_fbgemm": round(us / fb, 2),
        }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
