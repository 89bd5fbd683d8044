"""The retrieval model's loss path with the negative-sampling switches."""

import dataclasses

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.models import SequentialRetrieval, get_preset


def _model(**loss_overrides):
    config = get_preset("smoke")
    config = dataclasses.replace(
        config, loss=dataclasses.replace(config.loss, **loss_overrides)
    )
    torch.manual_seed(0)
    model = SequentialRetrieval(40, config, use_timestamps=False)
    model.eval()  # no dropout: runs must be comparable
    return model


def _batch(seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 1, 0, 9])
    items = torch.randint(1, 41, (int(lengths.sum()),), generator=gen)
    targets = torch.randint(1, 41, items.shape, generator=gen)
    negatives = torch.randint(1, 41, (items.numel(), 16), generator=gen)
    negatives[:, 0] = targets  # accidental positives
    return (
        KeyedJaggedTensor.from_lengths_sync(["item"], items, lengths),
        targets,
        negatives,
    )


def _loss_and_table_grad(model, batch):
    torch.manual_seed(3)
    loss = model(*batch)
    loss.backward()
    weight = model.item_embeddings.embeddings["item"].weight
    return loss.detach(), weight.grad.clone()


@pytest.mark.parametrize("sharing", [1, 2])
def test_offloaded_loss_equals_resident_loss_through_the_item_table(sharing):
    batch = _batch(0)
    resident = _loss_and_table_grad(
        _model(offload_negatives=False, logit_sharing=sharing), batch
    )
    offloaded = _loss_and_table_grad(
        _model(offload_negatives=True, segment_size=4, logit_sharing=sharing), batch
    )
    torch.testing.assert_close(offloaded[0], resident[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(offloaded[1], resident[1], atol=1e-6, rtol=1e-5)
    assert resident[1].abs().sum() > 0


def test_fp16_negatives_stay_close_and_keep_fp32_gradients():
    batch = _batch(1)
    full = _loss_and_table_grad(_model(), batch)
    half = _loss_and_table_grad(_model(negative_dtype="float16"), batch)
    assert half[1].dtype == torch.float32
    assert 0 < (half[0] - full[0]).abs() < 1e-2
    # fp16 rounding (relative 5e-4) amplified by 1/temperature, not more.
    assert (half[1] - full[1]).norm() < 1e-2 * full[1].norm()
