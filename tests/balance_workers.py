"""Worker processes of tests/test_balance_distributed.py (gloo on 127.0.0.1).

Each worker joins a process group, runs its checks and saves what the test asserts
on to ``out_dir/rank{r}.pt``; the test process never joins the group itself.
"""

import dataclasses
import socket
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torchrec_ascend.balance import (
    BalancedSampler,
    BalancedTrainBatches,
    LengthExchange,
    Prefetcher,
    SampleCostModel,
    train_lengths,
)
from torchrec_ascend.data import (
    TrainSequences,
    collate_train,
    leave_one_out,
    synthetic_sequence_dataset,
)
from torchrec_ascend.models import SequentialRetrieval, get_preset
from torchrec_ascend.train.distributed import DataParallelStrategy
from torchrec_ascend.train.loop import RunSpec, Trainer

NUM_ITEMS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(fn, world_size: int, out_dir: str, timeout_s: float = 90.0):
    """Spawns ``fn(rank, world_size, port, out_dir)`` and fails on error or hang."""
    port = free_port()
    context = mp.start_processes(
        fn,
        args=(world_size, port, out_dir),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers still running after {timeout_s} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(f"{out_dir}/rank{r}.pt") for r in range(world_size)]


def _init(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )


def _config():
    cfg = get_preset("smoke")
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, dropout=0.0, input_dropout=0.0),
    )


def _split(num_users: int, seed: int = 0):
    # >= 4 items: every user keeps >= 2 training items, so has a training example.
    lengths = np.random.default_rng(seed).integers(4, 30, num_users)
    return leave_one_out(synthetic_sequence_dataset(num_users, NUM_ITEMS, lengths, 0))


def _negatives(user: int, num_tokens: int) -> torch.Tensor:
    """Per-token negatives fixed by the user, so every placement sees the same."""
    g = torch.Generator().manual_seed(1000 + user)
    return torch.randint(1, NUM_ITEMS + 1, (num_tokens, 16), generator=g)


def _loss(model, batch):
    if batch.batch_size == 0:
        return torch.zeros(())
    negatives = torch.cat(
        [
            _negatives(int(u), int(n))
            for u, n in zip(batch.user_index, batch.lengths, strict=True)
        ]
    )
    return model(
        batch.features,
        batch.targets,
        negatives,
        batch.timestamps,
        batch.query_timestamps,
    )


def _grads(model) -> dict:
    return {
        k: None if p.grad is None else p.grad.clone()
        for k, p in model.named_parameters()
    }


def checks_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """Exchange-driven plans, weighted gradients and shuffle invariance."""
    _init(rank, world_size, port)
    result = {}
    cfg = _config()
    cost = SampleCostModel(cfg)

    # 1. Plans learned through the exchange, planned in a background thread.
    plans = {}
    exchange = LengthExchange(dist.new_group(backend="gloo"))
    for n, b, strategy, window in [
        (23, 2, "global", 2),
        (2, 2, "global", 1),
        (31, 3, "token_budget", 1),
        (23, 2, "fixed", 1),
    ]:
        lengths = np.random.default_rng(n).integers(1, 40, n)
        sampler = BalancedSampler(
            lengths,
            cost,
            world_size,
            rank,
            b,
            strategy,
            exchange=exchange,
            window=window,
        )
        with Prefetcher(sampler) as steps:
            plans[strategy, n] = [ids.tolist() for ids in steps]
    result["plans"] = plans

    # 2. Weighted gradient averaging equals one process on the union batch.
    split = _split(13)
    dataset = TrainSequences(split, cfg.model.max_seq_len)
    torch.manual_seed(0)
    model = SequentialRetrieval(split.num_items, cfg, use_timestamps=True)
    strategy = DataParallelStrategy("global")
    strategy.prepare(model)
    sampler = BalancedSampler(
        train_lengths(dataset), cost, world_size, rank, 2, "global", seed=3
    )
    grads, losses, users = [], [], []
    for batch in BalancedTrainBatches(dataset, sampler):
        model.zero_grad(set_to_none=True)
        loss = _loss(model, batch)
        if batch.batch_size:
            loss.backward()
        losses.append(strategy.reduce_gradients(model, loss, batch.num_tokens))
        grads.append(_grads(model))
        users.append(batch.user_index.tolist())
    result.update(grads=grads, losses=losses, users=users)
    if rank == 0:
        reference = []
        sampler.set_epoch(0)
        for plan in sampler.iter_plans():
            ids = np.sort(np.concatenate(plan))
            batch = collate_train([dataset[int(i)] for i in ids])
            model.zero_grad(set_to_none=True)
            loss = _loss(model, batch)
            loss.backward()
            reference.append(
                (
                    float(loss),
                    _grads(model),
                )
            )
        result["reference"] = reference

    # 3. A sample's output is the same whatever rank and batch it lands in.
    model.eval()
    outputs = {}
    for strategy_name, seed in [("fixed", 0), ("global", 1), ("token_budget", 2)]:
        sampler = BalancedSampler(
            train_lengths(dataset), cost, world_size, rank, 3, strategy_name, seed=seed
        )
        mine = {}
        for batch in BalancedTrainBatches(dataset, sampler, prefetch=0):
            if batch.batch_size == 0:
                continue
            emb = model.user_embeddings(
                batch.features, batch.timestamps, batch.query_timestamps
            )
            for u, row in zip(batch.user_index.tolist(), emb, strict=True):
                mine[u] = row.clone()
        outputs[strategy_name] = mine
    result["outputs"] = outputs
    result["rank_of_user"] = {
        name: {u: rank for u in per_user} for name, per_user in outputs.items()
    }

    result["trainer"] = _train_with_trainer(rank, out_dir)
    torch.save(result, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


class _RecordingStrategy(DataParallelStrategy):
    """Records the users of every batch this rank trains."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trained_users: list[list[int]] = []

    def train_batches(self, split, config, seed, epoch):
        batches = super().train_batches(split, config, seed, epoch)
        recorder = self.trained_users

        class _Recorded:
            def __len__(self):
                return len(batches)

            def __iter__(self):
                for batch in batches:
                    recorder.append(batch.user_index.tolist())
                    yield batch

        return _Recorded()


def _train_with_trainer(rank: int, out_dir: str) -> dict:
    """The real Trainer under data parallelism with a ragged, empty-rank tail."""
    cfg = _config()
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, epochs=2, batch_size=6)
    )
    # 7 users: the last global batch of 6 holds 1 sample, so two ranks get none.
    split = _split(7, seed=4)
    strategy = _RecordingStrategy("global")
    spec = RunSpec(
        dataset="synthetic",
        split=split,
        config=cfg,
        seed=0,
        output_dir=Path(out_dir) / "run",
        progress=False,
    )
    trainer = Trainer(spec, strategy)
    metrics = trainer.fit()
    weights = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    return {
        "trained_users": strategy.trained_users,
        "num_steps": len(strategy.trained_users),
        "metrics": metrics,
        "checksum": weights,
    }
