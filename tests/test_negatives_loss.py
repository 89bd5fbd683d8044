"""Sampled softmax with segmented/offloaded, reduced-precision and shared negatives,
against a straightforward float64 implementation (forward and backward)."""

import pytest
import torch
import torch.nn.functional as F

from torchrec_ascend.models.losses import SampledSoftmaxLoss
from torchrec_ascend.negatives import build_sharing_plan

EPS = 1e-6


def reference_loss(
    queries, positives, positive_ids, negatives, negative_ids, temperature, lenders
):
    """Per token: explicitly gather every candidate negative (own and borrowed),
    normalise, score, mask ids equal to the positive, cross-entropy."""
    num_tokens = queries.shape[0]
    if num_tokens == 0:
        return (queries.sum() + negatives.sum()) * 0.0
    losses = []
    for t in range(num_tokens):
        if negatives.dim() == 2:
            rows, ids = negatives, negative_ids
        else:
            owners = lenders[t].tolist()
            rows = torch.cat([negatives[u] for u in owners])
            ids = torch.cat([negative_ids[u] for u in owners])
        unit = rows / rows.norm(dim=-1, keepdim=True).clamp_min(EPS)
        scores = unit @ queries[t]
        scores = torch.where(ids == positive_ids[t], float("-inf"), scores)
        positive = (queries[t] * positives[t]).sum()
        logits = torch.cat([positive[None], scores]) / temperature
        losses.append(torch.logsumexp(logits, 0) - logits[0])
    return torch.stack(losses).mean()


def make_inputs(num_tokens, num_negatives, dim, num_items, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    queries = F.normalize(
        torch.randn(num_tokens, dim, generator=gen, dtype=dtype), dim=-1
    )
    positives = F.normalize(
        torch.randn(num_tokens, dim, generator=gen, dtype=dtype), dim=-1
    )
    negatives = torch.randn(num_tokens, num_negatives, dim, generator=gen, dtype=dtype)
    positive_ids = torch.randint(1, num_items + 1, (num_tokens,), generator=gen)
    negative_ids = torch.randint(
        1, num_items + 1, (num_tokens, num_negatives), generator=gen
    )
    return queries, positives, positive_ids, negatives, negative_ids


def loss_and_grads(loss_fn, inputs, seed):
    queries, positives, positive_ids, negatives, negative_ids = inputs
    leaves = [
        t.detach().clone().requires_grad_() for t in (queries, positives, negatives)
    ]
    torch.manual_seed(seed)
    loss = loss_fn(leaves[0], leaves[1], positive_ids, leaves[2], negative_ids)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss.detach(), grads


def reference_and_grads(inputs, temperature, expansion, seed):
    queries, positives, positive_ids, negatives, negative_ids = inputs
    torch.manual_seed(seed)
    lenders = None
    if negatives.dim() == 3:
        lenders = build_sharing_plan(queries.shape[0], expansion).lenders
    leaves = [
        t.detach().clone().requires_grad_() for t in (queries, positives, negatives)
    ]
    loss = reference_loss(
        leaves[0],
        leaves[1],
        positive_ids,
        leaves[2],
        negative_ids,
        temperature,
        lenders,
    )
    return loss.detach(), torch.autograd.grad(loss, leaves, allow_unused=True)


def assert_close(actual, expected, atol):
    loss, grads = actual
    ref_loss, ref_grads = expected
    torch.testing.assert_close(loss, ref_loss, atol=atol, rtol=0)
    for got, want, name in zip(grads, ref_grads, ("queries", "positives", "negatives")):
        torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("expansion", [1, 2, 3])
@pytest.mark.parametrize(
    "offload,segment_size", [(False, 256), (True, 1), (True, 7), (True, 1000)]
)
def test_per_token_matches_float64_reference(expansion, offload, segment_size):
    # T=23 is not a multiple of any segment size used; few items force collisions.
    inputs = make_inputs(23, 5, 12, num_items=9, seed=expansion)
    loss_fn = SampledSoftmaxLoss(
        0.1, expansion=expansion, offload_negatives=offload, segment_size=segment_size
    )
    actual = loss_and_grads(loss_fn, inputs, seed=11)
    expected = reference_and_grads(inputs, 0.1, expansion, seed=11)
    assert_close(actual, expected, atol=1e-10)


@pytest.mark.parametrize("expansion", [1, 3])
def test_accidental_positives_are_masked_in_own_and_shared_negatives(expansion):
    queries, positives, positive_ids, negatives, negative_ids = make_inputs(
        17, 6, 8, num_items=40, seed=3
    )
    # Half of every token's own negatives are its positive; with sharing, these
    # rows also reach other tokens, for whom they are ordinary negatives.
    negative_ids[:, :3] = positive_ids[:, None]
    # Token 0's positive also appears among everyone's negatives, so it is
    # borrowed back as an accidental positive.
    negative_ids[:, 3] = positive_ids[0]
    inputs = (queries, positives, positive_ids, negatives, negative_ids)
    loss_fn = SampledSoftmaxLoss(
        0.05, expansion=expansion, offload_negatives=True, segment_size=4
    )
    actual = loss_and_grads(loss_fn, inputs, seed=2)
    expected = reference_and_grads(inputs, 0.05, expansion, seed=2)
    assert_close(actual, expected, atol=1e-10)
    if expansion == 1:
        # A masked negative gets no gradient at all.
        assert actual[1][2][:, :3].abs().max() == 0
        assert actual[1][2][0, 3].abs().max() == 0
        assert actual[1][2][1:, 3].abs().max() > 0


def test_masking_changes_the_loss():
    inputs = make_inputs(9, 4, 8, num_items=1000, seed=5)
    queries, positives, positive_ids, negatives, negative_ids = inputs
    loss_fn = SampledSoftmaxLoss(0.1, offload_negatives=True, segment_size=2)
    clean = loss_fn(*inputs)
    hit_ids = negative_ids.clone()
    hit_ids[:, 0] = positive_ids
    masked = loss_fn(queries, positives, positive_ids, negatives, hit_ids)
    unmasked_ref = reference_loss(
        queries,
        positives,
        positive_ids,
        negatives[:, 1:],
        negative_ids[:, 1:],
        0.1,
        torch.arange(9)[:, None],
    )
    assert not torch.allclose(clean, masked)
    torch.testing.assert_close(masked, unmasked_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("offload", [False, True])
def test_empty_batch_gives_zero_loss_and_gradients(offload):
    inputs = make_inputs(0, 4, 8, num_items=10, seed=0)
    loss_fn = SampledSoftmaxLoss(0.1, expansion=2, offload_negatives=offload)
    loss, grads = loss_and_grads(loss_fn, inputs, seed=0)
    assert loss.item() == 0.0
    assert grads[2].shape == (0, 4, 8)


def test_single_token_with_sharing_borrows_nothing():
    inputs = make_inputs(1, 4, 8, num_items=10, seed=4)
    loss_fn = SampledSoftmaxLoss(0.1, expansion=4, offload_negatives=True)
    actual = loss_and_grads(loss_fn, inputs, seed=0)
    expected = reference_and_grads(inputs, 0.1, 1, seed=0)
    assert_close(actual, expected, atol=1e-12)


def test_zero_norm_and_non_contiguous_negatives():
    queries, positives, positive_ids, negatives, negative_ids = make_inputs(
        10, 4, 6, num_items=50, seed=8
    )
    # Norms below the floor: normalisation is clamped, so the radial part of the
    # gradient must not be removed there.
    negatives[2, 1] = 0.0
    negatives[4, 3] *= 3e-7 / negatives[4, 3].norm()
    wide = torch.randn(10, 8, 6, dtype=torch.float64)
    wide[:, ::2] = negatives
    view = wide[:, ::2]
    assert not view.is_contiguous()
    inputs = (queries, positives, positive_ids, view, negative_ids)
    for offload in (False, True):
        loss_fn = SampledSoftmaxLoss(
            0.1, expansion=2, offload_negatives=offload, segment_size=3
        )
        actual = loss_and_grads(loss_fn, inputs, seed=1)
        expected = reference_and_grads(inputs, 0.1, 2, seed=1)
        assert_close(actual, expected, atol=1e-10)


def test_shared_negatives_match_reference():
    queries, positives, positive_ids, negatives, negative_ids = make_inputs(
        13, 7, 8, num_items=6, seed=9
    )
    inputs = (queries, positives, positive_ids, negatives[0], negative_ids[0])
    loss_fn = SampledSoftmaxLoss(0.2)
    actual = loss_and_grads(loss_fn, inputs, seed=0)
    expected = reference_and_grads(inputs, 0.2, 1, seed=0)
    assert_close(actual, expected, atol=1e-12)


@pytest.mark.parametrize(
    "dtype_name,dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)]
)
@pytest.mark.parametrize("offload", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_reduced_precision_negatives_round_only_the_negative_rows(
    dtype_name, dtype, offload, shared
):
    queries, positives, positive_ids, negatives, negative_ids = make_inputs(
        19, 6, 16, num_items=30, seed=12, dtype=torch.float32
    )
    if shared:
        negatives, negative_ids = negatives[0], negative_ids[0]
    inputs = (queries, positives, positive_ids, negatives, negative_ids)
    loss_fn = SampledSoftmaxLoss(
        0.05, negative_dtype=dtype_name, offload_negatives=offload, segment_size=5
    )
    loss, grads = loss_and_grads(loss_fn, inputs, seed=0)
    # Reference: fp64 math on the rounded negatives, full-precision everything else;
    # the gradient reaches the fp32 rows unrounded (straight through the cast).
    rounded = negatives.to(dtype).double()
    ref_inputs = (
        queries.double(),
        positives.double(),
        positive_ids,
        rounded,
        negative_ids,
    )
    ref_loss, ref_grads = reference_and_grads(ref_inputs, 0.05, 1, seed=0)
    torch.testing.assert_close(loss.double(), ref_loss, atol=2e-5, rtol=0)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-4)
    # The rounding is real: full-precision rows give a measurably different loss.
    exact = SampledSoftmaxLoss(0.05, offload_negatives=offload)(*inputs)
    assert (exact - loss).abs() > 1e-7


def test_bad_shapes_are_named():
    q = torch.randn(4, 8)
    with pytest.raises(ValueError, match="negative_ids"):
        SampledSoftmaxLoss(0.1)(
            q,
            q,
            torch.zeros(4, dtype=torch.long),
            torch.randn(4, 3, 8),
            torch.zeros(4, 2, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="per-token negatives"):
        SampledSoftmaxLoss(0.1)(
            q,
            q,
            torch.zeros(4, dtype=torch.long),
            torch.randn(5, 3, 8),
            torch.zeros(5, 3, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="positive_ids"):
        SampledSoftmaxLoss(0.1)(
            q,
            q,
            torch.zeros(3, dtype=torch.long),
            torch.randn(3, 8),
            torch.zeros(3, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="negative_dtype"):
        SampledSoftmaxLoss(0.1, negative_dtype="float8")
    with pytest.raises(ValueError, match="expansion"):
        SampledSoftmaxLoss(0.1, expansion=0)


def test_store_keeps_one_copy_in_the_storage_dtype_and_segments_cover_all():
    from torchrec_ascend.negatives import NegativeStore

    rows = torch.randn(10, 3, 4)
    same = NegativeStore(rows, torch.float32, offload=True)
    assert same.rows.data_ptr() == rows.data_ptr()  # CPU fp32: no copy
    half = NegativeStore(rows, torch.float16, offload=True)
    assert half.rows.dtype == torch.float16
    pieces = list(half.segments(4, torch.float32))
    assert [(a, b) for a, b, _ in pieces] == [(0, 4), (4, 8), (8, 10)]
    torch.testing.assert_close(
        torch.cat([p for _, _, p in pieces]), rows.half().float(), atol=0, rtol=0
    )
    forward = torch.cat([p for _, _, p in half.forward_segments(3, torch.float32)])
    torch.testing.assert_close(forward, rows.half().float(), atol=0, rtol=0)
