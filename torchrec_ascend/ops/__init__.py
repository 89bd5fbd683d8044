"""Jagged operators: HSTU attention and the jagged utilities around it."""

from torchrec_ascend.ops.hstu_attention import hstu_attention
from torchrec_ascend.ops.jagged import (
    jagged_to_padded,
    lengths_to_offsets,
    padded_to_jagged,
    positions_in_sequence,
    segment_ids,
    validate_offsets,
)

__all__ = [
    "hstu_attention",
    "jagged_to_padded",
    "lengths_to_offsets",
    "padded_to_jagged",
    "positions_in_sequence",
    "segment_ids",
    "validate_offsets",
]
