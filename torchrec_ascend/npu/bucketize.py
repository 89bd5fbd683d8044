"""NPU kernel for fbgemm's ``block_bucketize_sparse_features`` (row-wise sharding).

Each id of feature t goes to bucket ``id // block_sizes[t]`` when it falls inside the
``my_size`` blocks, else to bucket ``id % my_size``; the output groups bags by bucket,
keeping the order of ids within a bag.
"""

import torch

from torchrec_ascend.npu._segments import complete_cumsum, segment_of


def block_bucketize_sparse_features(
    lengths: torch.Tensor,
    indices: torch.Tensor,
    bucketize_pos: bool,
    sequence: bool,
    block_sizes: torch.Tensor,
    my_size: int,
    weights: torch.Tensor | None = None,
    batch_size_per_feature: torch.Tensor | None = None,
    max_B: int = -1,
    block_bucketize_pos: list[torch.Tensor] | None = None,
    keep_orig_idx: bool = False,
    total_num_blocks: torch.Tensor | None = None,
    keep_orig_idx_per_feature: torch.Tensor | None = None,
):
    """Splits the bags of T features x B samples into ``my_size`` buckets.

    Args:
        lengths: (T*B,) bag lengths, feature-major.
        indices: (sum(lengths),) ids.
        bucketize_pos: also return each id's position inside its original bag.
        sequence: also return the permutation that undoes the bucketing.
        block_sizes: (T,) rows per bucket of each feature.
        my_size: number of buckets.
        weights: optional (sum(lengths),) per-id weights, moved with the ids.
        keep_orig_idx: keep global ids instead of bucket-local ones.

    Returns:
        (new_lengths (my_size*T*B,), new_indices, new_weights or None,
        new_pos or None, unbucketize_permute or None).
    """
    # Limitation: variable batch sizes, uneven per-bucket boundaries and
    # total_num_blocks are not implemented; TorchRec passes them only for VBE
    # and virtual-table row-wise sharding, which the NPU path does not support yet.
    unsupported = {
        "batch_size_per_feature": batch_size_per_feature,
        "block_bucketize_pos": block_bucketize_pos,
        "total_num_blocks": total_num_blocks,
        "keep_orig_idx_per_feature": keep_orig_idx_per_feature,
    }
    for name, value in unsupported.items():
        if value is not None:
            raise NotImplementedError(
                f"block_bucketize_sparse_features on NPU: {name} is not supported"
            )
    num_features = block_sizes.numel()
    if num_features == 0 or lengths.numel() % num_features:
        raise ValueError(
            f"lengths has {lengths.numel()} bags, not a multiple of the "
            f"{num_features} features in block_sizes"
        )
    num_bags = lengths.numel()
    batch = num_bags // num_features
    device = indices.device

    offsets = complete_cumsum(lengths.long())
    positions = torch.arange(indices.numel(), device=device)
    bag = segment_of(offsets, positions)
    ids = indices.long()
    block = block_sizes.long().index_select(0, bag // max(batch, 1))
    inside = ids < block * my_size
    safe_block = block.clamp(min=1)
    bucket = torch.where(inside, ids // safe_block, ids % my_size)
    if keep_orig_idx:
        local_ids = ids
    else:
        local_ids = torch.where(inside, ids % safe_block, ids // my_size)

    # A stable sort by (bucket, bag) keeps each bag's ids in their original order.
    key = bucket * num_bags + bag
    _, order = torch.sort(key, stable=True)
    counts = torch.zeros(my_size * num_bags, dtype=torch.int64, device=device)
    counts.index_add_(0, key, torch.ones_like(key))

    new_lengths = counts.to(lengths.dtype)
    new_indices = local_ids.index_select(0, order).to(indices.dtype)
    new_weights = None if weights is None else weights.index_select(0, order)
    new_pos = None
    if bucketize_pos:
        in_bag = positions - offsets.index_select(0, bag)
        new_pos = in_bag.index_select(0, order).to(indices.dtype)
    unbucketize_permute = None
    if sequence:
        unbucketize_permute = torch.empty_like(order).index_copy_(
            0, order, torch.arange(order.numel(), device=device)
        )
        unbucketize_permute = unbucketize_permute.to(indices.dtype)
    return new_lengths, new_indices, new_weights, new_pos, unbucketize_permute
