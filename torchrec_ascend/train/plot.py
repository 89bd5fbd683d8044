"""Training curves as a PNG: loss and validation NDCG@10 per epoch."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: list[dict], path: Path, title: str) -> None:
    """``history`` rows have "epoch", "train_loss" and optionally "valid" metrics."""
    epochs = [row["epoch"] for row in history]
    losses = [row["train_loss"] for row in history]
    valid = [
        (row["epoch"], row["valid"]["ndcg@10"]) for row in history if row.get("valid")
    ]

    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot(epochs, losses, color="tab:blue", marker="o", ms=3, label="train loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("train loss", color="tab:blue")
    if valid:
        ndcg_ax = loss_ax.twinx()
        ndcg_ax.plot(
            *zip(*valid), color="tab:red", marker="s", ms=3, label="valid NDCG@10"
        )
        ndcg_ax.set_ylabel("valid NDCG@10", color="tab:red")
    loss_ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
