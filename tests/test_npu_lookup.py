"""Jagged embedding lookup vs TorchRec's EmbeddingCollection and fbgemm's fused TBE."""

import npu_fixtures
import pytest
import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
    EmbeddingLocation,
    PoolingMode,
)
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.npu import (
    RowwiseAdagrad,
    jagged_embedding_lookup,
    npu_fused_forward,
)

npu = npu_fixtures.npu
strict_npu = npu_fixtures.strict_npu

DIM = 8
TABLES = {"t0": 13, "t1": 7}
# t0 serves two features (like item/target sharing the item table), t1 one.
FEATURES = {"f0": "t0", "f1": "t0", "f2": "t1"}
FEATURE_TO_TABLE = [0, 0, 1]


def random_kjt(
    seed: int, batch: int = 5, dtype: torch.dtype = torch.int64
) -> KeyedJaggedTensor:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 5, (len(FEATURES) * batch,), generator=gen)
    lengths[::4] = 0  # empty bags
    values = []
    for f, table in enumerate(FEATURES.values()):
        count = int(lengths[f * batch : (f + 1) * batch].sum())
        # A small id range forces repeated ids within and across bags.
        values.append(torch.randint(0, min(TABLES[table], 5), (count,), generator=gen))
    return KeyedJaggedTensor.from_lengths_sync(
        list(FEATURES), torch.cat(values).to(dtype), lengths
    )


def torchrec_collection(seed: int) -> EmbeddingCollection:
    torch.manual_seed(seed)
    return EmbeddingCollection(
        tables=[
            EmbeddingConfig(
                name=table,
                embedding_dim=DIM,
                num_embeddings=rows,
                feature_names=[f for f, t in FEATURES.items() if t == table],
            )
            for table, rows in TABLES.items()
        ]
    )


def table_weights(collection: EmbeddingCollection) -> list[torch.Tensor]:
    return [collection.embeddings[t].weight for t in TABLES]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("seed", range(3))
def test_matches_embedding_collection_forward_and_gradients(seed, dtype):
    kjt = random_kjt(seed, dtype=dtype)
    collection = torchrec_collection(seed)
    expected = collection(kjt)
    upstream = {
        f: torch.randn(
            expected[f].values().shape,
            generator=torch.Generator().manual_seed(f.__hash__() % 1000 + seed),
        )
        for f in FEATURES
    }
    sum((expected[f].values() * upstream[f]).sum() for f in FEATURES).backward()

    weights = [
        w.detach().clone().double().requires_grad_() for w in table_weights(collection)
    ]
    rows = jagged_embedding_lookup(
        kjt.values(), kjt.length_per_key(), FEATURE_TO_TABLE, weights
    )
    per_feature = rows.split(kjt.length_per_key())
    for f, got in zip(FEATURES, per_feature):
        torch.testing.assert_close(got.float(), expected[f].values())
    torch.cat([upstream[f].double() for f in FEATURES]).mul(rows).sum().backward()
    for got, want in zip(weights, table_weights(collection)):
        torch.testing.assert_close(got.grad.float(), want.grad, rtol=1e-5, atol=1e-6)
        assert got.grad.abs().sum() > 0


def fused_tbe(seed: int, device: torch.device, lr=0.1, eps=1e-3):
    """fbgemm's CPU-path TBE exactly as TorchRec builds it for FUSED sequence tables."""
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[
            (rows, DIM, EmbeddingLocation.HOST, ComputeDevice.CPU)
            for rows in TABLES.values()
        ],
        feature_table_map=FEATURE_TO_TABLE,
        pooling_mode=PoolingMode.NONE,
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
        learning_rate=lr,
        eps=eps,
        device=device,
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in tbe.split_embedding_weights():
            weight.copy_(torch.randn(weight.shape, generator=gen))
    return tbe


def run_steps(tbe, kjts, device, forward):
    outputs = []
    for step, kjt in enumerate(kjts):
        kjt = kjt.to(device)
        rows = forward(tbe, kjt)
        gen = torch.Generator().manual_seed(100 + step)
        upstream = torch.randn(rows.shape, generator=gen).to(device)
        (rows * upstream).sum().backward()
        outputs.append(rows.detach().cpu())
    weights = [w.detach().cpu().clone() for w in tbe.split_embedding_weights()]
    momentum = [s[0].detach().cpu().clone() for s in tbe.split_optimizer_states()]
    return outputs, weights, momentum


def fbgemm_forward(tbe, kjt):
    return tbe(indices=kjt.values(), offsets=kjt.offsets())


@pytest.mark.parametrize("seed", range(2))
def test_fused_rowwise_adagrad_matches_fbgemm_on_cpu(seed):
    kjts = [random_kjt(seed), random_kjt(seed + 10), random_kjt(seed + 20)]
    cpu = torch.device("cpu")
    want = run_steps(fused_tbe(seed, cpu), kjts, cpu, fbgemm_forward)
    got = run_steps(fused_tbe(seed, cpu), kjts, cpu, npu_fused_forward)
    for want_part, got_part in zip(want, got):
        for a, b in zip(got_part, want_part):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The optimizer really moved: state is non-zero and weights changed.
    assert all(m.abs().sum() > 0 for m in got[2])


def test_fused_lookup_on_npu_matches_cpu(strict_npu):
    kjts = [random_kjt(3), random_kjt(4)]
    cpu = torch.device("cpu")
    want = run_steps(fused_tbe(3, cpu), kjts, cpu, fbgemm_forward)
    tbe = fused_tbe(3, strict_npu)
    assert tbe.split_embedding_weights()[0].device.type == "npu"
    got = run_steps(tbe, kjts, strict_npu, npu_fused_forward)
    for want_part, got_part in zip(want, got):
        for a, b in zip(got_part, want_part):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_plain_lookup_gradients_on_npu(strict_npu):
    kjt = random_kjt(5)
    base = [torch.randn(rows, DIM, dtype=torch.float64) for rows in TABLES.values()]
    grads = []
    for device in ("cpu", strict_npu):
        weights = [w.detach().to(device).clone().requires_grad_() for w in base]
        k = kjt.to(device)
        rows = jagged_embedding_lookup(
            k.values(), k.length_per_key(), FEATURE_TO_TABLE, weights
        )
        (
            rows * torch.arange(rows.numel(), device=device).view_as(rows)
        ).sum().backward()
        grads.append([rows.detach().cpu()] + [w.grad.cpu() for w in weights])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_tables_in_any_feature_order():
    # Features of one table need not be adjacent (fbgemm's CPU TBE requires it).
    kjt = random_kjt(6)
    tables = [torch.randn(rows, DIM, dtype=torch.float64) for rows in TABLES.values()]
    lengths = kjt.length_per_key()
    values = kjt.values().split(lengths)
    order = [2, 0, 1]
    shuffled = jagged_embedding_lookup(
        torch.cat([values[f] for f in order]),
        [lengths[f] for f in order],
        [FEATURE_TO_TABLE[f] for f in order],
        tables,
    ).split([lengths[f] for f in order])
    plain = jagged_embedding_lookup(
        kjt.values(), lengths, FEATURE_TO_TABLE, tables
    ).split(lengths)
    for position, f in enumerate(order):
        torch.testing.assert_close(shuffled[position], plain[f])
        torch.testing.assert_close(plain[f], tables[FEATURE_TO_TABLE[f]][values[f]])


def test_fused_gradient_accumulation_over_two_forwards():
    # Two forwards before their backwards: each backward applies its own update.
    cpu = torch.device("cpu")
    kjts = [random_kjt(7), random_kjt(8)]
    want = run_steps(fused_tbe(7, cpu), kjts, cpu, fbgemm_forward)
    tbe = fused_tbe(7, cpu)
    outputs = [npu_fused_forward(tbe, kjt) for kjt in kjts]
    for step, rows in enumerate(outputs):
        gen = torch.Generator().manual_seed(100 + step)
        (rows * torch.randn(rows.shape, generator=gen)).sum().backward()
    weights = [w.detach() for w in tbe.split_embedding_weights()]
    momentum = [s[0].detach() for s in tbe.split_optimizer_states()]
    # The row gradients are the upstream tensors whatever the weights were, so
    # both updates together must equal fbgemm's two sequential steps.
    torch.testing.assert_close(outputs[0].detach(), want[0][0])
    for got, expected in zip(weights + momentum, want[1] + want[2]):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_rowwise_adagrad_formula_by_hand():
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    momentum = torch.tensor([0.5, 0.0, 0.0])
    state = RowwiseAdagrad(learning_rate=0.1, eps=0.01, momentum=[momentum])
    # Row 0 looked up twice, row 2 once; row 1 untouched.
    rows = jagged_embedding_lookup(torch.tensor([0, 2, 0]), [3], [0], [weight], state)
    (rows * torch.tensor([[1.0, 0.0], [2.0, 2.0], [1.0, 2.0]])).sum().backward()
    g0 = torch.tensor([2.0, 2.0])
    m0 = 0.5 + (g0 * g0).mean()
    torch.testing.assert_close(momentum, torch.tensor([float(m0), 0.0, 4.0]))
    torch.testing.assert_close(
        weight[0], torch.tensor([1.0, 2.0]) - 0.1 * g0 / (m0.sqrt() + 0.01)
    )
    torch.testing.assert_close(weight[1], torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(
        weight[2], torch.tensor([5.0, 6.0]) - 0.1 * 2 / (2.0 + 0.01)
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(indices=torch.tensor([0, 9])), "must be in \\[0, 3\\)"),
        (dict(feature_lengths=[1]), "sum to 1"),
        (dict(indices=torch.tensor([0.0, 1.0])), "int32/int64"),
        (dict(feature_to_table=[0, 4]), "names table 4"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    args = dict(
        indices=torch.tensor([0, 1]),
        feature_lengths=[1, 1],
        feature_to_table=[0, 0],
        weights=[torch.zeros(3, 2)],
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        jagged_embedding_lookup(**args)
