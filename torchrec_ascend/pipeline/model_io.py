"""What the pipeline reads from a user's model and batches: the embedding modules it
drives, the forward call and the loss / output split of its result."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.pipeline.sparse import SPARSE_MODULE_TYPES


def find_sparse_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost embedding modules of ``model`` by name (sharded or local)."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, SPARSE_MODULE_TYPES) and not any(
            name.startswith(prefix + ".") for prefix in found
        ):
            found[name] = module
    return found


def default_forward(model: nn.Module, batch: Any) -> Any:
    return model(batch)


def split_output(result: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(result, torch.Tensor):
        return result, result.detach()
    if isinstance(result, tuple) and len(result) == 2:
        return result[0], result[1]
    raise TypeError(
        "the model's forward must return a loss tensor or (loss, output), "
        f"got {type(result).__name__}"
    )


def only_kjt_field(batch: Any) -> KeyedJaggedTensor:
    fields = [
        v
        for v in getattr(batch, "__dict__", {}).values()
        if isinstance(v, KeyedJaggedTensor)
    ]
    if isinstance(batch, KeyedJaggedTensor):
        return batch
    if len(fields) != 1:
        raise ValueError(
            "cannot tell which KJT of the batch feeds the embedding module "
            f"({len(fields)} KJT fields); pass sparse_inputs"
        )
    return fields[0]
