"""Row-sparse optimizers for embedding shards: only the rows a step touched move.

Each optimizer updates rows `ids` of a (rows, D) weight in place from their summed
gradient (U, D), keeping its state per shard. The formulas are those of FBGEMM's
exact row-wise Adagrad and of `torch.optim.Adagrad` / `torch.optim.SparseAdam` on
sparse gradients (Adam's bias correction uses the global step count), so a step on
identical (ids, gradient) gives identical weights and state on every replica.
"""

import logging
from abc import ABC, abstractmethod

import torch

logger = logging.getLogger(__name__)


class RowSparseOptimizer(ABC):
    """Base class: `init_state` once per shard, `update` once per step."""

    def __init__(self, lr: float, eps: float) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.lr = lr
        self.eps = eps

    @abstractmethod
    def init_state(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """Zero state for a (rows, D) weight."""

    @abstractmethod
    def update(
        self,
        weight: torch.Tensor,
        ids: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, torch.Tensor],
        step: int,
    ) -> None:
        """Apply one step to rows `ids` ((U,) x int64, unique) of `weight`.

        Args:
            weight: (rows, D) x float, updated in place.
            ids: (U,) x int64 unique local row indices.
            grad: (U, D) x float gradient of each row.
            state: from `init_state`, updated in place.
            step: 1-based global step number.
        """

    @staticmethod
    def _check(weight: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor) -> None:
        if ids.dim() != 1 or grad.shape != (ids.numel(), weight.shape[1]):
            raise ValueError(
                f"grad must be (len(ids), D) = ({ids.numel()}, {weight.shape[1]}), "
                f"got {tuple(grad.shape)}"
            )


class RowwiseAdagrad(RowSparseOptimizer):
    """One accumulator per row: s += mean(g^2); w -= lr g / (sqrt(s) + eps)."""

    def __init__(self, lr: float, eps: float = 1e-8) -> None:
        super().__init__(lr, eps)

    def init_state(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": weight.new_zeros(weight.shape[0])}

    def update(self, weight, ids, grad, state, step) -> None:
        self._check(weight, ids, grad)
        acc = state["sum"].index_select(0, ids) + grad.pow(2).mean(dim=1)
        state["sum"].index_copy_(0, ids, acc)
        scale = self.lr / (acc.sqrt() + self.eps)
        weight.index_add_(0, ids, -scale.unsqueeze(1) * grad)


class Adagrad(RowSparseOptimizer):
    """Per element: s += g^2; w -= lr g / (sqrt(s) + eps)."""

    def __init__(self, lr: float, eps: float = 1e-10) -> None:
        super().__init__(lr, eps)

    def init_state(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": torch.zeros_like(weight)}

    def update(self, weight, ids, grad, state, step) -> None:
        self._check(weight, ids, grad)
        acc = state["sum"].index_select(0, ids) + grad.pow(2)
        state["sum"].index_copy_(0, ids, acc)
        weight.index_add_(0, ids, -self.lr * grad / (acc.sqrt() + self.eps))


class Adam(RowSparseOptimizer):
    """Lazy Adam: moments of touched rows only, bias correction by global step."""

    def __init__(
        self,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(lr, eps)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.betas = betas

    def init_state(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "exp_avg": torch.zeros_like(weight),
            "exp_avg_sq": torch.zeros_like(weight),
        }

    def update(self, weight, ids, grad, state, step) -> None:
        self._check(weight, ids, grad)
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        beta1, beta2 = self.betas
        m = (
            state["exp_avg"]
            .index_select(0, ids)
            .mul_(beta1)
            .add_(grad, alpha=1 - beta1)
        )
        v = state["exp_avg_sq"].index_select(0, ids).mul_(beta2)
        v.addcmul_(grad, grad, value=1 - beta2)
        state["exp_avg"].index_copy_(0, ids, m)
        state["exp_avg_sq"].index_copy_(0, ids, v)
        step_size = self.lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
        weight.index_add_(0, ids, -step_size * m / (v.sqrt() + self.eps))
