"""A plan from our planner (row-wise and table-row-wise on CPU, which TorchRec's own
sharders refuse) trains under DMP with the stock TrainPipelineSparseDist, giving the
same outputs as a plain loop."""

import torch
from dist_harness import run_ranks
from hsp_workers import pipeline_worker


def test_stock_train_pipeline_runs_our_plan(tmp_path):
    out = tmp_path / "pipe"
    run_ranks(pipeline_worker, 2, str(out), timeout_s=90)
    for rank in range(2):
        res = torch.load(f"{out}.{rank}")
        pipe, loop = res["pipeline"], res["loop"]
        assert pipe["sharding"] == {"t0": "row_wise", "t1": "table_row_wise"}
        assert pipe["pipeline_type"] == "ShardedEmbeddingBagCollection"
        assert len(pipe["logits"]) == len(loop["logits"]) == 4
        for a, b in zip(pipe["logits"], loop["logits"]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
