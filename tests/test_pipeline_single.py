"""Single-process pipeline tests: exactness against the plain loop, the semi-async
delay, dedup, the timeline arithmetic and input errors."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from torchrec_ascend.data import leave_one_out, make_train_loader
from torchrec_ascend.data.synthetic import synthetic_sequence_dataset
from torchrec_ascend.models import SequentialRetrieval, get_preset
from torchrec_ascend.pipeline import (
    DeviceStreams,
    RetrievalBatchPreparer,
    RetrievalTrainModule,
    StageTimeline,
    TrainPipeline,
    dedup_features,
)
from torchrec_ascend.pipeline.retrieval import _retrieval_loss
from torchrec_ascend.train.negatives import UniformNegativeSampler

CFG = get_preset("smoke")
BATCH = 32


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    # With several intra-op threads even the plain loop is not bitwise repeatable
    # from run to run (parallel reductions), so exactness is checked on one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split():
    data = synthetic_sequence_dataset(200, 150, 12, seed=3, zipf_exponent=1.2)
    return leave_one_out(data)


def _model(split):
    torch.manual_seed(11)
    return SequentialRetrieval(split.num_items, CFG, split.has_timestamps)


def _adamw(params):
    return torch.optim.AdamW(
        params, lr=1e-3, betas=(0.9, 0.98), weight_decay=CFG.train.weight_decay
    )


def _sampler(split):
    return UniformNegativeSampler(split.num_items, 16, True, seed=5)


def _loader(split, epoch=0):
    return make_train_loader(split, CFG.model.max_seq_len, BATCH, 0, epoch)


def _split_optimizers(model):
    table = list(model.item_embeddings.parameters())
    ids = {id(p) for p in table}
    dense = [p for p in model.parameters() if id(p) not in ids]
    return _adamw(dense), _adamw(table)


def _plain_losses(split, epochs=1):
    """The train CLI's loop: one AdamW over everything, model(features, ...)."""
    model = _model(split)
    optimizer = _adamw(model.parameters())
    sampler = _sampler(split)
    torch.manual_seed(123)
    losses = []
    for epoch in range(epochs):
        for batch in _loader(split, epoch):
            negatives = sampler.sample(batch.num_tokens)
            loss = model(
                batch.features,
                batch.targets,
                negatives,
                batch.timestamps,
                batch.query_timestamps,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses, model


def _pipeline_losses(
    split, mode, dedup, epochs=1, sparse_thread=None, learning_rate=None
):
    model = _model(split)
    dense, sparse = _split_optimizers(model)
    pipeline = TrainPipeline(
        RetrievalTrainModule(model),
        dense,
        torch.device("cpu"),
        mode,
        sparse_optimizer=sparse,
        prepare=RetrievalBatchPreparer(_sampler(split)),
        dedup=dedup,
        sparse_thread=sparse_thread,
        learning_rate=learning_rate,
    )
    torch.manual_seed(123)
    losses = []
    for epoch in range(epochs):
        it = iter(_loader(split, epoch))
        while True:
            try:
                losses.append(pipeline.progress(it).item())
            except StopIteration:
                break
        # A finished iterator keeps raising until a new one is given.
        with pytest.raises(StopIteration):
            pipeline.progress(it)
    pipeline.detach()
    return losses, model, pipeline


@pytest.mark.parametrize(
    "dedup, sparse_thread", [(False, False), (True, False), (True, True)]
)
def test_sync_reproduces_plain_loop_exactly(split, dedup, sparse_thread):
    plain, plain_model = _plain_losses(split, epochs=2)
    piped, piped_model, pipeline = _pipeline_losses(
        split, "sync", dedup, epochs=2, sparse_thread=sparse_thread
    )

    assert len(plain) == 2 * len(_loader(split))
    assert piped == plain
    for (name, a), (_, b) in zip(
        plain_model.state_dict().items(), piped_model.state_dict().items()
    ):
        assert torch.equal(a, b), name
    assert pipeline.stats == {
        "batches": len(plain),
        "padding_batches": 0,
        "dropped_batches": 0,
    }
    fractions = pipeline.fractions()
    # How much is compute depends on the machine's load (thread wake-ups count as
    # idle); only its presence and the partition are machine-independent.
    assert 0.0 < fractions["compute_frac"] <= 1.0
    assert all(0.0 <= v <= 1.0 for v in fractions.values())
    total = sum(fractions.values())
    assert total == pytest.approx(1.0, abs=1e-9)


def _delayed_reference_losses(split, learning_rate=None):
    """Semi-async by hand, serially: the lookup of batch i+1 runs after the sparse
    update of batch i-1 and before that of batch i."""
    model = _model(split)
    dense, sparse = _split_optimizers(model)
    preparer = RetrievalBatchPreparer(_sampler(split))
    table = model.item_embeddings
    torch.manual_seed(123)
    batches = [preparer(b) for b in _loader(split)]

    def lookup(batch):
        out = table(batch.features)
        leaves = {k: jt.values().detach().requires_grad_() for k, jt in out.items()}
        view = {
            k: JaggedTensor(values=leaves[k], lengths=jt.lengths())
            for k, jt in out.items()
        }
        return out, leaves, view

    losses = []
    current = lookup(batches[0])
    for i, batch in enumerate(batches):
        following = lookup(batches[i + 1]) if i + 1 < len(batches) else None
        out, leaves, view = current
        dense.zero_grad(set_to_none=True)
        loss, _ = _retrieval_loss(model, view, batch)
        loss.backward()
        keys = list(out)
        torch.autograd.backward(
            [out[k].values() for k in keys], [leaves[k].grad for k in keys]
        )
        if learning_rate is not None:
            for optimizer in (dense, sparse):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(i)
        sparse.step()
        sparse.zero_grad(set_to_none=True)
        dense.step()
        losses.append(loss.item())
        current = following
    return losses


def test_semi_async_lookup_is_exactly_one_update_behind(split):
    reference = _delayed_reference_losses(split)
    piped, _, _ = _pipeline_losses(split, "semi-async", dedup=False)
    plain, _ = _plain_losses(split)

    assert piped == reference
    # The first lookup precedes every update, so step 0 agrees with sync; step 1 does
    # not see update 0, so it differs.
    assert piped[0] == plain[0]
    assert piped[1] != plain[1]


def test_semi_async_applies_each_steps_learning_rate_to_its_own_update(split):
    def decay(step):
        return 1e-3 * 0.7**step

    reference = _delayed_reference_losses(split, decay)
    piped, _, _ = _pipeline_losses(split, "semi-async", False, learning_rate=decay)
    constant, _, _ = _pipeline_losses(split, "semi-async", dedup=False)

    # The update of batch i runs during step i+1 on the sparse thread, yet it uses
    # rate i, exactly as the serial reference does.
    assert piped == reference
    assert piped[2:] != constant[2:]


def test_dedup_rebuilds_the_same_rows_and_gradients():
    torch.manual_seed(0)
    table = torch.nn.Embedding(30, 4)
    lengths = torch.tensor([3, 0, 1, 2, 0, 0, 5, 1, 0], dtype=torch.int32)
    values = torch.randint(0, 30, (int(lengths.sum()),))
    values[:3] = 7  # repeated ids inside one bag and across features
    values[-1] = 7
    features = KeyedJaggedTensor(keys=["a", "b", "c"], values=values, lengths=lengths)
    deduped, plan = dedup_features(features, [["a", "c"], ["b"]])

    assert deduped.stride() == 3
    assert deduped.keys() == ["a", "b", "c"]
    by_key = deduped.to_dict()
    assert torch.equal(by_key["c"].lengths(), torch.zeros(3, dtype=torch.int32))
    a_ids = torch.cat([features["a"].values(), features["c"].values()]).unique()
    assert torch.equal(by_key["a"].values(), a_ids)

    out = {
        k: JaggedTensor(values=table(jt.values()), lengths=jt.lengths())
        for k, jt in by_key.items()
    }
    rebuilt = plan.expand(out)
    grads = {k: torch.randn(jt.values().shape) for k, jt in rebuilt.items()}
    torch.autograd.backward(
        [rebuilt[k].values() for k in grads], [grads[k] for k in grads]
    )
    dedup_grad = table.weight.grad.clone()
    table.weight.grad = None
    for key in ("a", "b", "c"):
        expected = table(features[key].values())
        assert torch.equal(rebuilt[key].values(), expected)
        assert torch.equal(rebuilt[key].lengths(), features[key].lengths())
        expected.backward(grads[key])
    torch.testing.assert_close(dedup_grad, table.weight.grad, rtol=0, atol=1e-6)


def test_timeline_fractions_from_known_intervals():
    timeline = StageTimeline()
    timeline._step_start = 100.0
    timeline.record("compute", 100.0, 101.0)
    timeline.record("compute", 100.5, 102.0)  # overlaps the first: counted once
    timeline.record("comm", 101.5, 103.0)  # 0.5 s hidden under compute, 1 s exposed
    timeline.record("comm", 99.0, 99.5)  # before the step: ignored
    import time as _time

    real = _time.perf_counter
    _time.perf_counter = lambda: 104.0
    try:
        seconds = timeline.end_step()
    finally:
        _time.perf_counter = real
    assert seconds == {"step": 4.0, "compute": 2.0, "exposed_comm": 1.0, "comm": 1.5}
    assert timeline.fractions() == {
        "compute_frac": 0.5,
        "exposed_comm_frac": 0.25,
        "idle_frac": 0.25,
    }
    with pytest.raises(ValueError, match="kind"):
        timeline.record("waiting", 0.0, 1.0)


def test_cpu_has_no_streams_and_bad_arguments_are_named(split):
    streams = DeviceStreams(torch.device("cpu"))
    assert not streams.enabled and streams.stream("copy") is None
    assert streams.record() is None

    model = _model(split)
    dense, sparse = _split_optimizers(model)
    module = RetrievalTrainModule(model)
    with pytest.raises(ValueError, match="mode must be one of"):
        TrainPipeline(module, dense, torch.device("cpu"), "async")
    everything = _adamw(model.parameters())
    with pytest.raises(ValueError, match="item_embeddings.*dense optimizer"):
        TrainPipeline(module, everything, torch.device("cpu"), "sync")
    with pytest.raises(ValueError, match="sparse_optimizer"):
        TrainPipeline(module, dense, torch.device("cpu"), "sync")
    with pytest.raises(ValueError, match="no EmbeddingCollection"):
        TrainPipeline(torch.nn.Linear(2, 2), dense, torch.device("cpu"))

    pipeline = TrainPipeline(
        module, dense, torch.device("cpu"), "sync", sparse_optimizer=sparse
    )
    history = KeyedJaggedTensor.from_lengths_sync(
        ["item"], torch.tensor([1]), torch.tensor([1])
    )
    # Outside the pipeline's dense stage the swapped forward refuses to run.
    with pytest.raises(RuntimeError, match="outside the pipeline"):
        model._lookup_history(history)
    pipeline.detach()
    rows = model._lookup_history(history)
    assert rows.shape == (1, CFG.model.embedding_dim)


@pytest.mark.parametrize("bad", [float("nan"), -1.0, "fast", None, True])
def test_a_bad_learning_rate_is_named_and_stops_the_threads(split, bad):
    import threading

    def host_threads():
        return sum("host-prep" in t.name for t in threading.enumerate())

    before = host_threads()
    with pytest.raises(ValueError, match=r"learning_rate\(0\) must return a finite"):
        _pipeline_losses(split, "semi-async", False, learning_rate=lambda step: bad)
    # The failed pipeline stopped its host thread (no detach() was called).
    assert host_threads() == before


def test_prefetch_must_be_positive(split):
    model = _model(split)
    dense, sparse = _split_optimizers(model)
    with pytest.raises(ValueError, match="prefetch must be >= 1"):
        TrainPipeline(
            RetrievalTrainModule(model),
            dense,
            torch.device("cpu"),
            "sync",
            sparse_optimizer=sparse,
            prefetch=0,
        )
