"""The train loop's --pipeline hook: same losses as the plain loop in sync mode, stage
fractions in metrics.json, and the CLI flag."""

import dataclasses
import json

import pytest
import torch

from torchrec_ascend.data import leave_one_out
from torchrec_ascend.data.synthetic import synthetic_sequence_dataset
from torchrec_ascend.models import get_preset
from torchrec_ascend.train.cli import build_parser
from torchrec_ascend.train.loop import RunSpec, train


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    # Bitwise comparisons need repeatable kernels (see test_pipeline_single).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(tmp_path, split, mode, epochs=1, schedule="constant"):
    cfg = get_preset("smoke")
    train_cfg = dataclasses.replace(cfg.train, epochs=epochs, lr_schedule=schedule)
    cfg = dataclasses.replace(cfg, train=train_cfg)
    spec = RunSpec(
        dataset="synthetic",
        split=split,
        config=cfg,
        seed=0,
        output_dir=tmp_path / f"{mode}-{schedule}",
        progress=False,
        pipeline=mode,
    )
    train(spec)
    return json.loads((tmp_path / f"{mode}-{schedule}" / "metrics.json").read_text())


def test_pipeline_sync_matches_plain_and_reports_fractions(tmp_path):
    split = leave_one_out(synthetic_sequence_dataset(300, 200, 15, seed=2))
    plain = _run(tmp_path, split, "plain")
    sync = _run(tmp_path, split, "sync")

    losses = [row["train_loss"] for row in plain["history"]]
    assert [row["train_loss"] for row in sync["history"]] == losses
    assert sync["test"] == plain["test"]
    assert "pipeline" not in plain["train"]
    stages = sync["train"]["pipeline"]
    assert stages["mode"] == "sync"
    assert stages["steps"] == 5  # 300 users, batch 64
    total = stages["compute_frac"] + stages["exposed_comm_frac"] + stages["idle_frac"]
    assert total == pytest.approx(1.0, abs=1e-9)
    assert 0.0 < stages["compute_frac"] <= 1.0


def test_pipeline_follows_the_cosine_schedule_step_by_step(tmp_path):
    split = leave_one_out(synthetic_sequence_dataset(300, 200, 15, seed=2))
    plain = _run(tmp_path, split, "plain", epochs=2, schedule="cosine")
    sync = _run(tmp_path, split, "sync", epochs=2, schedule="cosine")
    constant = _run(tmp_path, split, "sync", epochs=2, schedule="constant")

    losses = [row["train_loss"] for row in plain["history"]]
    # Same rate at every step as the plain loop, for dense and sparse updates alike.
    assert [row["train_loss"] for row in sync["history"]] == losses
    assert sync["test"] == plain["test"]
    # ... and the schedule is applied: a constant rate trains differently.
    assert [row["train_loss"] for row in constant["history"]] != losses


def test_cli_accepts_the_pipeline_modes():
    parser = build_parser()
    assert parser.parse_args([]).pipeline == "plain"
    assert parser.parse_args(["--pipeline", "semi-async"]).pipeline == "semi-async"
    with pytest.raises(SystemExit):
        parser.parse_args(["--pipeline", "async"])


def test_resumed_run_reports_fractions_over_all_epochs(tmp_path):
    split = leave_one_out(synthetic_sequence_dataset(300, 200, 15, seed=2))
    cfg = get_preset("smoke")

    def spec(epochs, resume):
        train_cfg = dataclasses.replace(cfg.train, epochs=epochs)
        return RunSpec(
            dataset="synthetic",
            split=split,
            config=dataclasses.replace(cfg, train=train_cfg),
            seed=0,
            output_dir=tmp_path / "resumed",
            resume=resume,
            progress=False,
            pipeline="semi-async",
        )

    train(spec(1, False))
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)
    state["config"]["train"]["epochs"] = 2
    torch.save(state, tmp_path / "resumed" / "last.pt")
    train(spec(2, True))
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert len(metrics["history"]) == 2
    assert metrics["train"]["pipeline"]["steps"] == 10  # 5 steps in each epoch
