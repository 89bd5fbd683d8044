"""Negative sampling at scale: background host sampling of jagged positions,
reduced-precision negatives, segmented (offloaded) logits with exact gradients and
intra-batch logit sharing."""

from torchrec_ascend.negatives.background import (
    BackgroundNegativeSampler,
    SamplingStats,
    sample_valid_positions,
)
from torchrec_ascend.negatives.precision import (
    NEGATIVE_DTYPES,
    negative_dtype,
    round_negatives,
)
from torchrec_ascend.negatives.segmented import segmented_negative_logits
from torchrec_ascend.negatives.sharing import (
    SharingPlan,
    build_sharing_plan,
    gather_borrowed,
)
from torchrec_ascend.negatives.streaming import NegativeStore

__all__ = [
    "NEGATIVE_DTYPES",
    "BackgroundNegativeSampler",
    "NegativeStore",
    "SamplingStats",
    "SharingPlan",
    "build_sharing_plan",
    "gather_borrowed",
    "negative_dtype",
    "round_negatives",
    "sample_valid_positions",
    "segmented_negative_logits",
]
