"""Runs a sharded retrieval training job on several local processes (gloo on
127.0.0.1): the job behind the pipeline's multi-process tests and benchmark.

Every rank builds the same SequentialRetrieval on synthetic sequences, shards the item
table row-wise with DMP and trains ``batches[rank]`` batches with one of the loops:
"plain", "sync", "semi-async" (:class:`TrainPipeline`) or "torchrec" (TorchRec's
``TrainPipelineSparseDist``).
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import os
import queue
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

logger = logging.getLogger(__name__)

LOOPS = (
    "plain",
    "sync",
    "semi-async",
    "torchrec",
    "torchrec-dedup",
    "torchrec-semi-sync",
    "torchrec-prefetch",
)
_TORCHREC_PIPELINES = {
    "torchrec": "TrainPipelineSparseDist",
    "torchrec-dedup": "TrainPipelineSparseDist",
    "torchrec-semi-sync": "TrainPipelineSemiSync",
    "torchrec-prefetch": "PrefetchTrainPipelineSparseDist",
}


@dataclass(frozen=True)
class RetrievalJob:
    """One multi-process training job.

    Attributes:
        loop: "plain", "sync", "semi-async" (ours), or "torchrec" (TorchRec's
            TrainPipelineSparseDist), "torchrec-dedup" (the same with the EC
            sharder's ``use_index_dedup``), "torchrec-semi-sync",
            "torchrec-prefetch".
        batches: batches each rank trains, (world,) (uneven counts allowed).
        num_users, num_items, seq_len: synthetic data shape (Zipf item popularity).
        batch_size: users per batch per rank.
        preset: model preset name (``torchrec_ascend.models.PRESETS``).
        num_negatives: shared negatives per batch.
        dedup: host-side id dedup in the pipelined loops.
        pad: give the pipeline a padding batch for uneven data.
        warmup: steps excluded from the timing.
        seed: model, data and negative seed.
        threads: torch intra-op threads per rank.
        embedding_dim: overrides the preset's item embedding width D.
        link_gbit_per_s: if set, every collective (sparse all-to-alls and DDP's
            all-reduce alike) costs what it would on a link of this bandwidth
            (:class:`~torchrec_ascend.distributed.emulated_link.EmulatedLink`).
        link_latency_us: fixed cost per collective on that link.
    """

    loop: str
    batches: tuple[int, ...]
    num_users: int = 2000
    num_items: int = 5000
    seq_len: int = 30
    batch_size: int = 32
    preset: str = "smoke"
    num_negatives: int = 64
    dedup: bool = True
    pad: bool = True
    warmup: int = 2
    seed: int = 0
    threads: int = 1
    embedding_dim: int | None = None
    link_gbit_per_s: float | None = None
    link_latency_us: float = 0.0

    def __post_init__(self) -> None:
        if self.loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, got {self.loop!r}")
        if not self.batches or min(self.batches) < 0:
            raise ValueError(f"batches must be >= 0 per rank, got {self.batches}")

    @property
    def world(self) -> int:
        return len(self.batches)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_batches(job: RetrievalJob, rank: int, split: Any, max_seq_len: int):
    """This rank's batches: every world-th batch of a seeded loader, cycled."""
    from torchrec_ascend.data import make_train_loader

    def stream():
        for epoch in itertools.count():
            loader = make_train_loader(
                split, max_seq_len, job.batch_size, job.seed, epoch, drop_last=True
            )
            yield from itertools.islice(loader, rank, None, job.world)

    return itertools.islice(stream(), job.batches[rank])


def _build(job: RetrievalJob, rank: int) -> dict[str, Any]:
    from torchrec_ascend.data import leave_one_out
    from torchrec_ascend.data.synthetic import synthetic_sequence_dataset
    from torchrec_ascend.models import SequentialRetrieval, get_preset
    from torchrec_ascend.pipeline.distributed import shard_embeddings
    from torchrec_ascend.pipeline.retrieval import RetrievalTrainModule

    cfg = get_preset(job.preset)
    if job.embedding_dim is not None:
        cfg = dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, embedding_dim=job.embedding_dim),
        )
    cfg = dataclasses.replace(
        cfg,
        loss=dataclasses.replace(
            cfg.loss, num_negatives=job.num_negatives, shared_negatives=True
        ),
    )
    split = leave_one_out(
        synthetic_sequence_dataset(
            job.num_users, job.num_items, job.seq_len, seed=job.seed
        )
    )
    torch.manual_seed(job.seed)
    model = SequentialRetrieval(
        split.num_items, cfg, split.has_timestamps, device=torch.device("meta")
    )
    module = RetrievalTrainModule(model)
    # The pipelined loops need DDP on a group apart from the sparse all-to-alls;
    # the single-threaded loops get the two groups too, so all loops train the same
    # job.
    sparse_group = dist.new_group(backend="gloo")
    dmp = shard_embeddings(
        module,
        torch.device("cpu"),
        sparse_group,
        dist.group.WORLD,
        # TorchRec's pipeline with TorchRec's own id dedup in the sharder.
        index_dedup=job.loop == "torchrec-dedup",
    )
    dense = [p for n, p in dmp.named_parameters() if "item_embeddings" not in n]
    optimizer = torch.optim.AdamW(dense, lr=cfg.train.learning_rate)
    return {"cfg": cfg, "split": split, "model": dmp, "optimizer": optimizer}


def _train(job: RetrievalJob, rank: int) -> dict[str, Any]:
    built = _build(job, rank)
    link = None
    if job.link_gbit_per_s is not None:
        link = built["link"] = _emulate_link(job, built["model"])
    try:
        return _train_loop(job, rank, built)
    finally:
        if link is not None:
            link.uninstall()


def _emulate_link(job: RetrievalJob, model: Any) -> Any:
    from torch.nn.parallel import DistributedDataParallel

    from torchrec_ascend.distributed.emulated_link import EmulatedLink

    link = EmulatedLink(job.link_gbit_per_s, job.link_latency_us).install()
    for module in model.modules():
        if isinstance(module, DistributedDataParallel):
            module.register_comm_hook(None, link.ddp_comm_hook(module.process_group))
    return link


def _link_seconds(built: dict[str, Any]) -> float:
    link = built.get("link")
    return link.stats["link_seconds"] if link is not None else 0.0


def _train_loop(job: RetrievalJob, rank: int, built: dict[str, Any]) -> dict:
    from torchrec_ascend.pipeline.retrieval import (
        RetrievalBatchPreparer,
        padding_batch,
    )
    from torchrec_ascend.pipeline.train_pipeline import TrainPipeline
    from torchrec_ascend.train.negatives import UniformNegativeSampler

    cfg, split, model = built["cfg"], built["split"], built["model"]
    sampler = UniformNegativeSampler(
        split.num_items, job.num_negatives, True, seed=job.seed * 7919 + rank
    )
    preparer = RetrievalBatchPreparer(sampler)
    device = torch.device("cpu")
    batches = _rank_batches(job, rank, split, cfg.model.max_seq_len)
    torchrec_loop = job.loop.startswith("torchrec")
    if torchrec_loop:
        from torchrec.distributed.train_pipeline import train_pipelines

        cls = getattr(train_pipelines, _TORCHREC_PIPELINES[job.loop])
        pipeline = cls(model, built["optimizer"], device)
        source = map(preparer, batches)
    else:
        pipeline = TrainPipeline(
            model,
            built["optimizer"],
            device,
            job.loop,
            prepare=preparer,
            sparse_inputs=lambda b: b.features,
            pad_batch=padding_batch(split.has_timestamps) if job.pad else None,
            dedup=job.dedup,
        )
        source = batches

    losses: list[float] = []
    start = None
    timed_samples = 0
    for step in itertools.count():
        if step == job.warmup:
            start = time.perf_counter()
            cpu_start = time.process_time()
            link_start = _link_seconds(built)
            if not torchrec_loop:
                pipeline.timeline.totals = dict.fromkeys(pipeline.timeline.totals, 0.0)
                pipeline.timeline.steps = 0
        try:
            out = pipeline.progress(source)
        except StopIteration:
            break
        except Exception as error:
            if not torchrec_loop:
                raise
            # TorchRec's other pipelines are probed, not relied on: report how they
            # fail on this device.
            return {"rank": rank, "failed": f"{type(error).__name__}: {error}"[:300]}
        if out is not None:
            losses.append(float(out.reshape(-1)[0]) if out.numel() else 0.0)
            if start is not None:
                timed_samples += job.batch_size
    seconds = time.perf_counter() - start if start is not None else 0.0
    # CPU time of the whole process (every thread, gloo's included): on a shared
    # machine, throughput per CPU-second separates doing less work from using more
    # cores.
    cpu_seconds = time.process_time() - cpu_start if start is not None else 0.0
    result: dict[str, Any] = {
        "rank": rank,
        "losses": losses,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "timed_samples": timed_samples,
    }
    if "link" in built and start is not None:
        # Time this rank's emulated link was busy: the communication the loop had
        # to hide or wait for.
        result["link_seconds"] = _link_seconds(built) - link_start
    if not torchrec_loop:
        result["fractions"] = pipeline.timeline.summary()
        result["stats"] = dict(pipeline.stats)
        pipeline.detach()
    return result


def _worker(rank: int, jobs: list[RetrievalJob], port: int, results: Any) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(jobs[0].threads)
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    try:
        dist.init_process_group(
            "gloo",
            rank=rank,
            world_size=jobs[0].world,
            timeout=datetime.timedelta(seconds=60),
        )
        for index, job in enumerate(jobs):
            result = _train(job, rank)
            result["job"] = index
            results.put(result)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        results.put({"rank": rank, "error": traceback.format_exc()})


def run_jobs(
    jobs: list[RetrievalJob], timeout: float = 300.0
) -> list[list[dict[str, Any]]]:
    """Runs ``jobs`` one after the other on the same spawned processes.

    All jobs must have the same world size. Starting the processes once saves the
    import and rendezvous time that would otherwise dominate short jobs.

    Returns:
        For each job, the per-rank results sorted by rank.

    Raises:
        TimeoutError: the jobs did not finish within ``timeout`` seconds in total
            (every rank is killed first, so a hang cannot outlive the call).
        RuntimeError: a rank failed (its traceback is in the message).
    """
    worlds = {job.world for job in jobs}
    if len(worlds) != 1:
        raise ValueError(f"jobs must share one world size, got {sorted(worlds)}")
    world = worlds.pop()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(rank, jobs, port, results), daemon=True)
        for rank in range(world)
    ]
    for p in procs:
        p.start()
    expected = world * len(jobs)
    deadline = time.monotonic() + timeout
    collected: list[dict[str, Any]] = []
    try:
        while len(collected) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{len(jobs)} jobs on {world} ranks did not finish in "
                    f"{timeout:.0f} s ({len(collected)} of {expected} results)"
                )
            try:
                item = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError(
                        f"rank processes exited with {[p.exitcode for p in procs]}"
                    ) from None
                continue
            if "error" in item:
                raise RuntimeError(f"rank {item['rank']} failed:\n{item['error']}")
            collected.append(item)
    finally:
        for p in procs:
            p.join(timeout=10.0)
            if p.is_alive():
                p.kill()
                p.join()
    return [
        sorted((r for r in collected if r["job"] == i), key=lambda r: r["rank"])
        for i in range(len(jobs))
    ]


def run_job(job: RetrievalJob, timeout: float = 300.0) -> list[dict[str, Any]]:
    """Runs one job; per-rank results sorted by rank (see :func:`run_jobs`)."""
    return run_jobs([job], timeout)[0]
