"""Two simulated hosts launched by torchrun (node ranks 0 and 1, 2 ranks each, on
127.0.0.1): the topology comes from torchrun's environment, HSP groups are the
hosts, no all-to-all byte crosses hosts, and the bytes counted on the wire match
the byte model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dist_harness import free_port

ENTRY = Path(__file__).with_name("hsp_torchrun_entry.py")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "2",
                "--node-rank",
                str(node),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                str(ENTRY),
                str(out),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for node in range(2)
    ]
    try:
        for p in procs:
            output, _ = p.communicate(timeout=150)
            assert p.returncode == 0, output.decode()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(4)]


def test_topology_and_groups_follow_torchrun_nodes(records):
    for r in records:
        assert (r["hosts"], r["devices_per_host"]) == (2, 2)
        assert r["node"] == r["rank"] // 2 and r["local_rank"] == r["rank"] % 2
        assert r["shard_ranks"] == [2 * r["node"], 2 * r["node"] + 1]
        assert r["replica_ranks"] == [r["local_rank"], r["local_rank"] + 2]


def test_wire_bytes_match_the_byte_model(records):
    measured, modelled = records[0]["measured"], records[0]["modelled"]
    assert measured["a2a"]["inter"] == modelled["a2a"]["inter"] == 0
    # The cross-group sync is exactly what the model says.
    assert measured["sparse_sync"] == modelled["sync"]
    assert measured["sparse_sync"]["inter"] > 0
    # TorchRec's all-to-all also ships split sizes and int32/int64 lengths the model
    # approximates; the embedding rows dominate.
    intra = measured["a2a"]["intra"]
    assert abs(modelled["a2a"]["intra"] - intra) <= 0.2 * intra
