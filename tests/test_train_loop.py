"""Training end to end on small data: measured quality, repeatability, resume."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from torchrec_ascend.data import SequenceDataset, leave_one_out
from torchrec_ascend.models import get_preset
from torchrec_ascend.train import RunSpec, train
from torchrec_ascend.train.checkpoint import LAST

NUM_ITEMS = 60


def cyclic_dataset(num_users=300, seed=0, with_timestamps=True):
    """Each user walks the item cycle 1..NUM_ITEMS from a random start: the next
    item is fully determined by the last one, so a working model must find it."""
    rng = np.random.default_rng(seed)
    items, times = [], []
    for _ in range(num_users):
        start, length = rng.integers(0, NUM_ITEMS), rng.integers(4, 15)
        items.append((start + np.arange(length)) % NUM_ITEMS + 1)
        times.append(np.cumsum(rng.integers(1, 5000, size=length)).astype(np.int64))
    return SequenceDataset(
        name="cyclic",
        num_items=NUM_ITEMS,
        user_ids=np.arange(num_users, dtype=np.int64),
        item_ids=[a.astype(np.int64) for a in items],
        timestamps=times if with_timestamps else None,
    )


def smoke_config(model="hstu", epochs=3):
    cfg = get_preset("smoke")
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, model=model),
        train=dataclasses.replace(cfg.train, epochs=epochs, learning_rate=3e-3),
    )


def run(tmp_path, name, config, seed=0, resume=False, split=None):
    spec = RunSpec(
        dataset="cyclic",
        split=split or leave_one_out(cyclic_dataset()),
        config=config,
        seed=seed,
        output_dir=tmp_path / name,
        resume=resume,
        progress=False,
    )
    return train(spec)


@pytest.mark.parametrize("model", ["hstu", "sasrec"])
def test_learns_a_deterministic_sequence_far_above_chance(tmp_path, model):
    metrics = run(tmp_path, model, smoke_config(model, epochs=6))
    chance_hr10 = 10 / NUM_ITEMS
    assert metrics["test"]["hr@10"] > 0.9, metrics["test"]
    assert metrics["test"]["hr@10"] > 5 * chance_hr10
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_metrics_json_has_the_documented_fields(tmp_path):
    metrics = run(tmp_path, "fields", smoke_config(epochs=1))
    on_disk = json.loads((tmp_path / "fields" / "metrics.json").read_text())
    assert on_disk["best_epoch"] == 1 and on_disk["model"] == "hstu"
    for key in ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr"):
        assert 0.0 <= on_disk["test"][key] <= 1.0
    for key in ("samples_per_s", "tokens_per_s", "step_time_ms", "mfu", "peak_gflops"):
        assert on_disk["train"][key] > 0
    assert on_disk["train"]["mfu"] < 1.0
    assert on_disk["test"] == metrics["test"]
    assert (tmp_path / "fields" / "training.png").stat().st_size > 1000


def test_same_seed_repeats_and_resume_matches_uninterrupted(tmp_path):
    split = leave_one_out(cyclic_dataset())
    full = run(tmp_path, "full", smoke_config(epochs=2), split=split)
    again = run(tmp_path, "again", smoke_config(epochs=2), split=split)
    assert full["history"] == again["history"]

    # One epoch, then resume for the second: identical to two epochs in one go.
    run(tmp_path, "resumed", smoke_config(epochs=1), split=split)
    state = torch.load(tmp_path / "resumed" / LAST, weights_only=False)
    state["config"]["train"]["epochs"] = 2
    torch.save(state, tmp_path / "resumed" / LAST)
    resumed = run(tmp_path, "resumed", smoke_config(epochs=2), split=split, resume=True)
    assert [r["train_loss"] for r in resumed["history"]] == pytest.approx(
        [r["train_loss"] for r in full["history"]], rel=1e-6
    )
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-6)


def test_resume_refuses_a_different_config(tmp_path):
    split = leave_one_out(cyclic_dataset())
    run(tmp_path, "a", smoke_config(epochs=1), split=split)
    other = smoke_config(epochs=1)
    other = dataclasses.replace(
        other, loss=dataclasses.replace(other.loss, temperature=0.5)
    )
    with pytest.raises(ValueError, match="another config"):
        run(tmp_path, "a", other, split=split, resume=True)


@pytest.fixture
def one_intra_op_thread():
    # Bitwise equality needs repeatable kernels (no parallel reductions).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("pipeline", ["plain", "semi-async"])
def test_ctrl_c_mid_epoch_then_resume_matches_uninterrupted(
    tmp_path, monkeypatch, pipeline, one_intra_op_thread
):
    import torchrec_ascend.pipeline.trainer as pipelined
    import torchrec_ascend.train.loop as loop
    from torchrec_ascend.train.checkpoint import INTERRUPTED

    split = leave_one_out(cyclic_dataset())

    def spec(name, resume=False):
        return RunSpec(
            dataset="cyclic",
            split=split,
            config=smoke_config(epochs=2),
            seed=0,
            output_dir=tmp_path / name,
            resume=resume,
            progress=False,
            pipeline=pipeline,
        )

    full = train(spec("full"))

    # Ctrl-C after the second step of epoch 2 (300 users, batch 64: 5 steps/epoch).
    original, calls = loop.train_step_flops, []

    def interrupt_at_step_7(*args):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return original(*args)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "train_step_flops", interrupt_at_step_7)
        patch.setattr(pipelined, "train_step_flops", interrupt_at_step_7)
        with pytest.raises(KeyboardInterrupt):
            train(spec("cut"))
    assert len(calls) == 7
    state = torch.load(tmp_path / "cut" / LAST, weights_only=False)
    assert state["next_epoch"] == 1 and len(state["history"]) == 1
    partial = torch.load(tmp_path / "cut" / INTERRUPTED, weights_only=False)
    assert partial["epoch"] == 2
    # The mid-epoch weights differ from the epoch-1 checkpoint: work is kept.
    assert any(
        not torch.equal(partial["model"][k], v) for k, v in state["model"].items()
    )

    resumed = train(spec("cut", resume=True))
    assert [r["train_loss"] for r in resumed["history"]] == [
        r["train_loss"] for r in full["history"]
    ]
    assert resumed["test"] == full["test"]
