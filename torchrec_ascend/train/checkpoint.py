"""Atomic checkpoints: a crash or Ctrl-C mid-write never leaves a broken file."""

import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best_model.pt"
INTERRUPTED = "interrupted.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """Writes to a temporary file in the same folder, then renames over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_if_exists(path: Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    logger.info("loading checkpoint %s", path)
    return torch.load(path, map_location="cpu", weights_only=False)
