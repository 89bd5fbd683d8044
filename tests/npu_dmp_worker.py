"""One DMP training step of SequentialRetrieval (HSTU) in a fresh process.

Run by ``test_npu_dmp.py`` once on "cpu" and once on the emulated "npu"; it saves
losses, the sharded item table and its row-wise Adagrad state, and the dense
parameters after the step, so the test can compare the two devices.
"""

import dataclasses
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _batch(num_items: int):
    gen = torch.Generator().manual_seed(11)
    lengths = torch.tensor([3, 1, 6, 2])
    total = int(lengths.sum())
    ids = torch.randint(1, num_items + 1, (total,), generator=gen)
    ids[1] = ids[0]  # a repeated id inside one history
    timestamps = torch.cumsum(torch.randint(1, 3000, (total,), generator=gen), 0)
    return dict(
        lengths=lengths,
        ids=ids,
        targets=torch.randint(1, num_items + 1, (total,), generator=gen),
        negatives=torch.randint(1, num_items + 1, (total, 4), generator=gen),
        timestamps=timestamps,
        query_timestamps=timestamps + 7,
    )


class _OpRecorder:
    """Records (operator, device) of every non-ATen operator called in a block."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        calls = self.calls = set()

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.name()
                if not name.startswith("aten::"):
                    flat = torch.utils._pytree.tree_leaves((args, kwargs or {}))
                    devices = {t.device.type for t in flat if torch.is_tensor(t)}
                    calls.add((name, ",".join(sorted(devices))))
                return func(*args, **(kwargs or {}))

        self.mode = Mode()


def run(device_type: str, port: int, out_path: str, sharding_type: str) -> None:
    if device_type == "npu":
        import npu_emulator

        npu_emulator.load()
        # From here on, any fbgemm/torchrec_ascend operator without an NPU kernel
        # fails, as it would on hardware.
        npu_emulator.load().set_strict(True)
    import torch.distributed as dist
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.batched_embedding_kernel import BatchedFusedEmbedding
    from torchrec.distributed.embedding import (
        EmbeddingCollectionSharder,
        ShardedEmbeddingCollection,
    )
    from torchrec.distributed.model_parallel import (
        DataParallelWrapper,
        DistributedModelParallel,
    )

    class SingleRankDense(DataParallelWrapper):
        # One rank has no dense gradients to average; skipping DDP keeps the
        # emulated device clear of collectives (it has no collective library).
        def wrap(self, dmp, env, device) -> None:
            pass

    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardingEnv
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    import torchrec_ascend  # noqa: F401  (NPU kernels and the TBE bridge)
    from torchrec_ascend.device import DeviceSpec
    from torchrec_ascend.models import SequentialRetrieval, get_preset
    from torchrec_ascend.npu import place_plan_on_device

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    spec = DeviceSpec.of(device_type)
    # The emulator has no collective library of its own; gloo moves host memory.
    dist.init_process_group("gloo", rank=0, world_size=1)
    pg = dist.group.WORLD

    preset = get_preset("smoke")
    config = dataclasses.replace(
        preset, model=dataclasses.replace(preset.model, dropout=0.0, input_dropout=0.0)
    )
    num_items = 40
    torch.manual_seed(0)
    model = SequentialRetrieval(
        num_items, config, use_timestamps=True, device=torch.device("meta")
    )
    sharder = EmbeddingCollectionSharder(
        fused_params={
            "optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
            "learning_rate": 0.05,
            "eps": 1e-3,
        }
    )
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=1, compute_device="cpu"),
        constraints={
            "item": ParameterConstraints(
                sharding_types=[sharding_type], compute_kernels=["fused"]
            )
        },
    )
    plan = planner.collective_plan(model, [sharder], pg)
    # Without DDP, DMP leaves dense modules where they are.
    for name, child in model.named_children():
        if name != "item_embeddings":
            child.to(spec.device)
    if spec.type == "npu":
        plan = place_plan_on_device(plan, "npu")
    dmp = DistributedModelParallel(
        model,
        env=ShardingEnv.from_process_group(pg),
        device=spec.device,
        plan=plan,
        sharders=[sharder],
        data_parallel_wrapper=SingleRankDense(),
    )
    collection = next(
        m for m in dmp.modules() if isinstance(m, ShardedEmbeddingCollection)
    )
    fused = [
        kernel
        for lookup in collection._lookups
        for kernel in lookup._emb_modules
        if isinstance(kernel, BatchedFusedEmbedding)
    ]
    assert len(fused) == 1, f"expected one fused embedding kernel, got {fused}"
    tbe = fused[0].emb_module
    with torch.no_grad():
        for table in tbe.split_embedding_weights():
            gen = torch.Generator().manual_seed(5)
            table.copy_(0.1 * torch.randn(table.shape, generator=gen))

    batch = {k: v.to(spec.device) for k, v in _batch(num_items).items()}
    kjt = KeyedJaggedTensor.from_lengths_sync(["item"], batch["ids"], batch["lengths"])
    args = (kjt, batch["targets"], batch["negatives"])
    kwargs = dict(
        timestamps=batch["timestamps"], query_timestamps=batch["query_timestamps"]
    )
    dense = [p for n, p in dmp.named_parameters() if "item_embeddings" not in n]
    optimizer = torch.optim.SGD(dense, lr=0.1)

    recorder = _OpRecorder()
    with recorder.mode:
        loss = dmp(*args, **kwargs)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        loss_after = dmp(*args, **kwargs)

    result = {
        "device": str(tbe.split_embedding_weights()[0].device),
        "ops": sorted(recorder.calls),
        "loss": loss.detach().cpu(),
        "loss_after": loss_after.cpu(),
        "table": tbe.split_embedding_weights()[0].detach().cpu().clone(),
        "momentum": tbe.split_optimizer_states()[0][0].detach().cpu().clone(),
        "dense": {
            n: p.detach().cpu().clone()
            for n, p in dmp.named_parameters()
            if "item_embeddings" not in n
        },
    }
    if device_type == "npu":
        result["fallback_ops"] = npu_emulator.fallback_ops()
    torch.save(result, out_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
