"""Topology tiers, device-generic sharders, plans (global and HSP), explanations and
the per-tier byte model."""

import pytest
import torch
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollection,
    EmbeddingCollection,
)

from torchrec_ascend.planner import (
    INTER_NODE,
    INTRA_NODE,
    ClusterTopology,
    Planner,
    TableLayout,
    ascend_910b_nodes,
    cpu_hosts,
    default_sharders,
    explain_plan,
    layouts_from_plan,
    step_traffic,
    topology_from_env,
)


def _job(items=4000):
    model = nn.Module()
    model.ec = EmbeddingCollection(
        tables=[
            EmbeddingConfig(
                name="item",
                embedding_dim=16,
                num_embeddings=items,
                feature_names=["item", "target"],
            )
        ],
        device=torch.device("meta"),
    )
    model.ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=f"t{i}",
                embedding_dim=8,
                num_embeddings=500,
                feature_names=[f"f{i}"],
            )
            for i in range(2)
        ],
        device=torch.device("meta"),
    )
    return model


def test_topology_tiers_and_presets():
    topo = ascend_910b_nodes(2)
    assert topo.world_size == 16 and topo.device_type == "npu"
    assert topo.tier(0, 7) == INTRA_NODE
    assert topo.tier(7, 8) == INTER_NODE
    assert topo.bandwidth(INTRA_NODE) > topo.bandwidth(INTER_NODE)
    assert cpu_hosts(3, 2).host_of(5) == 2
    with pytest.raises(ValueError, match="rank must be in"):
        topo.host_of(16)
    with pytest.raises(ValueError, match="device_type"):
        ClusterTopology(num_hosts=1, devices_per_host=1, device_type="tpu")


def test_topology_from_torchrun_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    topo = topology_from_env()
    assert (topo.num_hosts, topo.devices_per_host) == (4, 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="multiple of LOCAL_WORLD_SIZE"):
        topology_from_env()


def test_sharders_offer_row_wise_on_cpu_and_npu():
    stock = EmbeddingBagCollectionSharder()
    assert "row_wise" not in stock.sharding_types("cpu")
    ours = default_sharders()[0]
    for device in ("cpu", "npu"):
        types = ours.sharding_types(device)
        assert {"row_wise", "table_row_wise", "grid_shard"} <= set(types)
        assert ours.compute_kernels("row_wise", device) == ["fused"]


def test_global_plan_places_npu_devices_on_all_ranks():
    topo = ascend_910b_nodes(2)
    plan = Planner(topo, batch_size=64).plan(_job(), default_sharders())
    item = plan.plan["ec"]["item"]
    assert item.sharding_type == "row_wise"
    placements = [str(s.placement) for s in item.sharding_spec.shards]
    assert len(placements) == 16
    assert placements[9] == "rank:9/npu:1"


def test_hsp_plan_covers_one_group_and_defaults_to_row_wise():
    topo = ascend_910b_nodes(4)
    plan = Planner(topo, num_groups=4, batch_size=64).plan(_job(), default_sharders())
    for module_plan in plan.plan.values():
        for sharding in module_plan.values():
            assert sharding.sharding_type == "row_wise"
            assert sorted(sharding.ranks) == list(range(8))
    rows = [s.shard_sizes[0] for s in plan.plan["ec"]["item"].sharding_spec.shards]
    assert sum(rows) == 4000


def test_planner_rejects_bad_group_count():
    with pytest.raises(ValueError, match="num_groups must divide"):
        Planner(ascend_910b_nodes(2), num_groups=3)


def test_explanation_lists_tables_memory_and_tiers():
    topo = ascend_910b_nodes(2)
    model = _job()
    plan = Planner(topo, num_groups=2, batch_size=32).plan(model, default_sharders())
    report = explain_plan(plan, model, topo, 2, 32, ids_per_sample=4.0)
    text = str(report)
    assert "ec.item: row_wise (fused) on ranks [0, 1, 2, 3, 4, 5, 6, 7]" in text
    assert len(report.rank_memory) == 8
    # 4000 rows x (16 + 1) floats spread over 8 ranks plus the two EBC tables.
    expected = 4 * (4000 * 17 + 2 * 500 * 9)
    assert sum(report.rank_memory) == expected
    assert report.traffic.a2a[INTER_NODE] == 0
    assert report.traffic.sync[INTER_NODE] > 0
    assert "inter-node" in text


def test_byte_model_counts_every_message_by_hand():
    topo = ClusterTopology(num_hosts=2, devices_per_host=2)
    table = TableLayout(
        "item",
        dim=4,
        pooled=False,
        features=("item",),
        row_blocks=((0, 0, 10), (1, 10, 20)),
    )
    batches = [
        {"item": torch.tensor([1, 11, 12])},  # rank 0 -> rank 1: 2 ids
        {"item": torch.tensor([2])},  # rank 1 -> rank 0: 1 id
        {"item": torch.tensor([15])},  # rank 2 -> rank 3: 1 id
        {"item": torch.tensor([3, 4])},  # rank 3 -> rank 2: 2 ids
    ]
    traffic = step_traffic([table], batches, 1, topo, group_size=2, hsp_sync=True)
    # Each off-rank message: ids x 8 B + 1 length x 8 B + 2 x ids x 4 floats x 4 B.
    per_id = 8 + 2 * 16
    assert traffic.a2a[INTRA_NODE] == 4 * 8 + per_id * (2 + 1 + 1 + 2)
    assert traffic.a2a[INTER_NODE] == 0
    # Shard 0 (rows 0..9): groups touch {1, 2} and {3, 4}: union 4, pad 2.
    # Shard 1: {11, 12} and {15}: union 3, pad 2. Ring of 2: each rank sends once.
    gather = 1 * (8 + 2 * 8)
    expected = 2 * (gather + 4 * 16) + 2 * (gather + 3 * 16)
    assert traffic.sync[INTER_NODE] == expected


def test_hsp_cuts_inter_node_all_to_all_for_a_large_job():
    topo = ascend_910b_nodes(4)
    model = _job(items=200_000)
    sharders = default_sharders()
    global_plan = Planner(topo, batch_size=64).plan(model, sharders)
    hsp_plan = Planner(topo, num_groups=4, batch_size=64).plan(model, sharders)
    global_report = explain_plan(global_plan, model, topo, 1, 64, 8.0)
    hsp_report = explain_plan(hsp_plan, model, topo, 4, 64, 8.0)
    assert global_report.traffic.a2a[INTER_NODE] > 0
    assert hsp_report.traffic.a2a[INTER_NODE] == 0
    assert len(layouts_from_plan(hsp_plan, model)) == 3
