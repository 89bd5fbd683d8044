"""The CLI as a user runs it: Ctrl-C leaves a usable checkpoint, --resume continues."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from torchrec_ascend.train.checkpoint import LAST


def test_ctrl_c_then_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torchrec_ascend.train", "--dataset", "ml-latest-small",
        "--config", "smoke", "--output-dir", str(out), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd + ["--epochs", "1000000"], env=env, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    # training.png is written after each finished epoch (last.pt exists from start).
    while not (out / "training.png").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()[-2000:]
    assert b"interrupted during epoch" in stderr and b"--resume" in stderr
    assert (out / "interrupted.pt").exists()

    state = torch.load(out / LAST, weights_only=False)
    done = state["next_epoch"]
    assert done >= 1 and len(state["history"]) == done

    resumed = subprocess.run(
        cmd + ["--epochs", str(done + 1), "--resume"], env=env, capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert f"resuming at epoch {done}".encode() in resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, done + 2))
    assert metrics["test"]["users"] == 610


def test_unknown_preset_is_rejected_by_argparse():
    result = subprocess.run(
        [sys.executable, "-m", "torchrec_ascend.train", "--config", "nope"],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert b"invalid choice: 'nope'" in result.stderr
