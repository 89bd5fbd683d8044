"""Jagged operators: HSTU attention and the jagged utilities around it."""

from torchrec_ascend.ops.hstu_attention import hstu_attention
from torchrec_ascend.ops.hstu_dense import dense_hstu_attention, padded_hstu_attention
from torchrec_ascend.ops.hstu_generic import (
    LengthBucket,
    generic_hstu_attention,
    padding_waste,
    plan_length_buckets,
)
from torchrec_ascend.ops.hstu_layer import hstu_output_gate, hstu_uvqk
from torchrec_ascend.ops.jagged import (
    jagged_to_padded,
    lengths_to_offsets,
    padded_to_jagged,
    positions_in_sequence,
    segment_ids,
    validate_offsets,
)
from torchrec_ascend.ops.jagged_ops import (
    jagged_concat,
    jagged_index_select,
    jagged_split,
)

__all__ = [
    "LengthBucket",
    "dense_hstu_attention",
    "generic_hstu_attention",
    "hstu_attention",
    "hstu_output_gate",
    "hstu_uvqk",
    "jagged_concat",
    "jagged_index_select",
    "jagged_split",
    "padded_hstu_attention",
    "padding_waste",
    "plan_length_buckets",
    "jagged_to_padded",
    "lengths_to_offsets",
    "padded_to_jagged",
    "positions_in_sequence",
    "segment_ids",
    "validate_offsets",
]
