"""The single-process training loop: epochs, evaluation, checkpoints, metrics.json."""

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from torchrec_ascend.data import LeaveOneOutSplit, make_train_loader
from torchrec_ascend.models import (
    ExperimentConfig,
    SequentialRetrieval,
    train_step_flops,
)
from torchrec_ascend.train.checkpoint import (
    BEST,
    INTERRUPTED,
    LAST,
    load_if_exists,
    save_atomic,
)
from torchrec_ascend.train.evaluate import evaluate
from torchrec_ascend.train.negatives import UniformNegativeSampler
from torchrec_ascend.train.peak import measure_matmul_peak
from torchrec_ascend.train.plot import plot_history

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _without_epochs(config: dict) -> dict:
    """Configs that differ only in the epoch budget may continue each other."""
    return {**config, "train": {**config["train"], "epochs": None}}


@dataclass
class RunSpec:
    """What to train and where to write it."""

    dataset: str
    split: LeaveOneOutSplit
    config: ExperimentConfig
    seed: int
    output_dir: Path
    resume: bool = False
    progress: bool = True
    pipeline: str = "plain"


class Trainer:
    """Trains a SequentialRetrieval model epoch by epoch.

    Every epoch ends with a checkpoint (``last.pt``); the best validation NDCG@10
    weights are kept in ``best_model.pt`` and scored on test at the end. A fresh run
    first saves its initial state as ``last.pt``, so ``last.pt`` always holds the end
    of the last finished epoch. Ctrl-C leaves it as it is, so ``resume`` continues
    exactly as if the interrupted epoch had never started (bitwise, on one intra-op
    thread), and writes the weights reached mid-epoch to ``interrupted.pt``.
    """

    def __init__(self, spec: RunSpec, strategy=None) -> None:
        self.spec = spec
        # Data-parallel hooks (batches, gradient averaging); None trains alone.
        self.strategy = strategy
        self.is_main = strategy is None or strategy.is_main
        cfg = spec.config
        seed_everything(spec.seed)
        self.model = SequentialRetrieval(
            spec.split.num_items, cfg, use_timestamps=spec.split.has_timestamps
        )
        if strategy is not None:
            strategy.prepare(self.model)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.train.learning_rate,
            betas=(0.9, 0.98),
            weight_decay=cfg.train.weight_decay,
        )
        # Pipelined modes train through torchrec_ascend.pipeline; plain keeps the
        # loop below.
        self.pipeline = None
        if spec.pipeline != "plain":
            from torchrec_ascend.pipeline.trainer import PipelinedEpochs

            self.pipeline = PipelinedEpochs(self.model, self.optimizer, spec.pipeline)
            self.optimizer = self.pipeline.optimizer
        self.history: list[dict] = []
        self.start_epoch = 0
        self.best = {"epoch": -1, "ndcg@10": -1.0, "valid": None}
        self.stale = 0
        self.timing = {
            "steps": 0,
            "seconds": 0.0,
            "samples": 0,
            "tokens": 0,
            "flops": 0.0,
        }
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        if spec.resume:
            self._restore()

    # -- checkpoints ---------------------------------------------------------------

    def _state(self, next_epoch: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "next_epoch": next_epoch,
            "history": self.history,
            "best": self.best,
            "stale": self.stale,
            "timing": self.timing,
            "torch_rng": torch.get_rng_state(),
            "config": self.spec.config.to_dict(),
            "seed": self.spec.seed,
            "pipeline": None if self.pipeline is None else self.pipeline.state_dict(),
        }

    def _restore(self) -> None:
        state = load_if_exists(self.spec.output_dir / LAST)
        if state is None:
            logger.info("no checkpoint in %s; starting fresh", self.spec.output_dir)
            return
        if _without_epochs(state["config"]) != _without_epochs(
            self.spec.config.to_dict()
        ):
            raise ValueError(
                f"checkpoint in {self.spec.output_dir} was trained with another "
                "config; use a fresh --output-dir or the same --config"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.start_epoch = state["next_epoch"]
        self.history, self.best = state["history"], state["best"]
        self.stale, self.timing = state["stale"], state["timing"]
        if self.pipeline is not None and state.get("pipeline") is not None:
            self.pipeline.load_state_dict(state["pipeline"])
        logger.info("resuming at epoch %d", self.start_epoch)

    # -- training ------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> float:
        cfg = self.spec.config
        if self.strategy is not None:
            loader = self.strategy.train_batches(
                self.spec.split, cfg, self.spec.seed, epoch
            )
        else:
            loader = make_train_loader(
                self.spec.split,
                cfg.model.max_seq_len,
                cfg.train.batch_size,
                self.spec.seed,
                epoch,
            )
        sampler = UniformNegativeSampler(
            self.spec.split.num_items,
            cfg.loss.num_negatives,
            cfg.loss.shared_negatives,
            seed=self.spec.seed * 100_003 + epoch,
        )
        self.model.train()
        total_loss, steps = 0.0, 0
        progress = dict(
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            disable=not self.spec.progress,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        steps_per_epoch = len(loader)
        if self.pipeline is not None:
            first = epoch * steps_per_epoch
            return self.pipeline.train_epoch(
                tqdm(loader, **progress),
                sampler,
                self.timing,
                epoch,
                lambda step: self._learning_rate(first + step, steps_per_epoch),
            )
        # Negative ids are drawn ahead by a worker thread, off the step's path.
        prefetched = sampler.in_background(loader)
        bar = tqdm(prefetched, **progress)
        for batch, negatives in bar:
            start = time.perf_counter()
            self._set_learning_rate(epoch * steps_per_epoch + steps, steps_per_epoch)
            self.optimizer.zero_grad(set_to_none=True)
            if batch.batch_size:
                loss = self.model(
                    batch.features,
                    batch.targets,
                    negatives,
                    batch.timestamps,
                    batch.query_timestamps,
                )
                loss.backward()
            else:
                # A data-parallel rank left without samples still joins the step.
                loss = torch.zeros(())
            value = float(loss.detach())
            if self.strategy is not None:
                value = self.strategy.reduce_gradients(
                    self.model, loss, batch.num_tokens
                )
            self.optimizer.step()
            elapsed = time.perf_counter() - start

            if not np.isfinite(value):
                raise FloatingPointError(f"loss became {value} at epoch {epoch + 1}")
            total_loss += value
            steps += 1
            t = self.timing
            t["steps"] += 1
            t["seconds"] += elapsed
            t["samples"] += batch.batch_size
            t["tokens"] += batch.num_tokens
            t["flops"] += train_step_flops(
                batch.lengths, cfg.model, cfg.loss.num_negatives
            )
            bar.set_postfix(
                loss=f"{total_loss / steps:.4f}",
                samples_s=f"{t['samples'] / max(t['seconds'], 1e-9):.0f}",
            )
        stats = prefetched.stats
        logger.debug(
            "epoch %d negatives: %.3f s sampling in the background, %.3f s waited",
            epoch + 1,
            stats.sample_seconds,
            stats.wait_seconds,
        )
        return total_loss / max(steps, 1)

    def _learning_rate(self, step: int, steps_per_epoch: int) -> float:
        """The schedule's rate at global ``step`` (counted over all epochs)."""
        tcfg = self.spec.config.train
        if tcfg.lr_schedule == "constant":
            return tcfg.learning_rate
        progress = min(step / max(tcfg.epochs * steps_per_epoch, 1), 1.0)
        return tcfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _set_learning_rate(self, step: int, steps_per_epoch: int) -> None:
        if self.spec.config.train.lr_schedule == "constant":
            return
        lr = self._learning_rate(step, steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def fit(self) -> dict:
        spec, cfg = self.spec, self.spec.config
        peak = measure_matmul_peak(torch.float32)
        logger.info("fp32 matmul peak on this machine: %.1f GFLOP/s", peak)
        # Epochs whose results are in self.history (and in last.pt).
        completed = self.start_epoch
        if self.is_main and not (spec.output_dir / LAST).exists():
            save_atomic(self._state(completed), spec.output_dir / LAST)
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                loss = self._train_epoch(epoch)
                row = {"epoch": epoch + 1, "train_loss": loss}
                last = epoch + 1 == cfg.train.epochs
                if (epoch + 1) % cfg.train.eval_every == 0 or last:
                    row["valid"] = evaluate(
                        self.model, spec.split, "valid", cfg.train.eval_batch_size
                    )
                    self._track_best(epoch + 1, row["valid"])
                    logger.info(
                        "epoch %d loss %.4f valid ndcg@10 %.4f hr@10 %.4f",
                        epoch + 1,
                        loss,
                        row["valid"]["ndcg@10"],
                        row["valid"]["hr@10"],
                    )
                else:
                    logger.info("epoch %d loss %.4f", epoch + 1, loss)
                self.history.append(row)
                completed = epoch + 1
                if self.is_main:
                    save_atomic(self._state(completed), spec.output_dir / LAST)
                    plot_history(
                        self.history, spec.output_dir / "training.png", spec.dataset
                    )
                if cfg.train.patience and self.stale >= cfg.train.patience:
                    logger.info(
                        "no validation gain for %d evaluations; stopping", self.stale
                    )
                    break
        except KeyboardInterrupt:
            # last.pt stays at the end of epoch `completed`: resuming from mid-epoch
            # weights would train part of the epoch twice.
            if self.is_main:
                partial = {"model": self.model.state_dict(), "epoch": completed + 1}
                save_atomic(partial, spec.output_dir / INTERRUPTED)
            logger.warning(
                "interrupted during epoch %d; checkpoint of epoch %d in %s (--resume "
                "restarts epoch %d exactly); weights at the interrupt in %s",
                completed + 1,
                completed,
                spec.output_dir / LAST,
                completed + 1,
                spec.output_dir / INTERRUPTED,
            )
            raise
        return self._finish(peak)

    def _track_best(self, epoch: int, valid: dict) -> None:
        if valid["ndcg@10"] > self.best["ndcg@10"]:
            self.best = {"epoch": epoch, "ndcg@10": valid["ndcg@10"], "valid": valid}
            self.stale = 0
            if self.is_main:
                save_atomic(self.model.state_dict(), self.spec.output_dir / BEST)
        else:
            self.stale += 1

    def _finish(self, peak_gflops: float) -> dict:
        spec, cfg = self.spec, self.spec.config
        if self.strategy is not None:
            self.strategy.barrier()  # the main rank has written the best weights
        best_state = load_if_exists(spec.output_dir / BEST)
        if best_state is not None:
            self.model.load_state_dict(best_state)
        test = evaluate(self.model, spec.split, "test", cfg.train.eval_batch_size)
        t = self.timing
        seconds = max(t["seconds"], 1e-9)
        achieved = t["flops"] / seconds / 1e9
        metrics = {
            "dataset": spec.dataset,
            "model": cfg.model.model,
            "config": cfg.to_dict(),
            "seed": spec.seed,
            "best_epoch": self.best["epoch"],
            "valid": self.best["valid"],
            "test": test,
            "train": {
                "samples_per_s": t["samples"] / seconds,
                "tokens_per_s": t["tokens"] / seconds,
                "step_time_ms": 1000.0 * seconds / max(t["steps"], 1),
                "achieved_gflops": achieved,
                "peak_gflops": peak_gflops,
                "mfu": achieved / peak_gflops if peak_gflops > 0 else None,
                "train_seconds": t["seconds"],
            },
            "history": self.history,
        }
        if self.pipeline is not None:
            metrics["train"]["pipeline"] = self.pipeline.summary()
        if self.is_main:
            with open(spec.output_dir / "metrics.json", "w") as f:
                json.dump(metrics, f, indent=2)
            plot_history(self.history, spec.output_dir / "training.png", spec.dataset)
        return metrics


def train(spec: RunSpec, strategy=None) -> dict:
    """Runs :class:`Trainer` end to end and returns the metrics written to disk.

    ``strategy`` is an optional data-parallel strategy such as
    :class:`~torchrec_ascend.train.distributed.DataParallelStrategy`.
    """
    return Trainer(spec, strategy).fit()


def describe(metrics: dict, output_dir: Path | None = None) -> str:
    """A short human-readable summary of a metrics dict."""
    test, train = metrics["test"], metrics["train"]
    name = f"{metrics['dataset']} / {metrics['model']}"
    lines = [
        f"{name}: best epoch {metrics['best_epoch']}",
        "test  " + "  ".join(f"{k}={test[k]:.4f}" for k in test if k != "users"),
        f"train {train['samples_per_s']:.0f} samples/s,"
        f" {train['tokens_per_s']:.0f} tokens/s,"
        f" step {train['step_time_ms']:.1f} ms, MFU {100 * (train['mfu'] or 0):.2f}%"
        f" of {train['peak_gflops']:.0f} GFLOP/s",
    ]
    if output_dir is not None:
        lines.append(
            f"wrote {output_dir / 'metrics.json'} and {output_dir / 'training.png'}"
        )
    return "\n".join(lines)
