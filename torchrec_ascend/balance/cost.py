"""The per-sample cost that load balancing equalises: training FLOPs from flops.py."""

from __future__ import annotations

import numpy as np
import torch

from torchrec_ascend.models.configs import ExperimentConfig
from torchrec_ascend.models.flops import sample_train_flops


class SampleCostModel:
    """Training FLOPs of one sequence from its length and the model config.

    Projections and the loss are linear in the length, attention is quadratic; the
    formulas are those of the MFU accounting (:mod:`torchrec_ascend.models.flops`),
    so balancing and MFU can never disagree about what a sample costs.

    Args:
        config: The experiment (model shape and number of negatives).

    Example::

        >>> model = SampleCostModel(get_preset("smoke"))
        >>> model.costs(np.array([1, 10, 20])).shape
        (3,)
    """

    def __init__(self, config: ExperimentConfig) -> None:
        # Limitation: FLOPs ignore how efficiently each kind of work runs; on this
        # project's CPU kernels an attention FLOP takes up to ~2x longer than a GEMM
        # FLOP, so sets of equal FLOPs but different length mixes can differ in time.
        # A per-device attention weight fitted from timed steps would close the gap.
        self.config = config

    def costs(self, lengths: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B,) x float64 training FLOPs of each sequence.

        Args:
            lengths: (B,) integer sequence lengths, >= 0.
        """
        lengths = torch.as_tensor(np.asarray(lengths))
        if lengths.dim() != 1 or lengths.dtype.is_floating_point:
            raise ValueError(
                "lengths must be a 1-D integer array (B,), got "
                f"shape {tuple(lengths.shape)} dtype {lengths.dtype}"
            )
        if lengths.numel() and int(lengths.min()) < 0:
            raise ValueError("lengths must be >= 0")
        flops = sample_train_flops(
            lengths, self.config.model, self.config.loss.num_negatives
        )
        return flops.numpy()

    def __call__(self, lengths: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.costs(lengths)
