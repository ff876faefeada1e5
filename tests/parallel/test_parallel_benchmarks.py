"""Smoke tests of benchmarks/tensor_parallel.py and benchmarks/router.py at the tiniest scale on
the CPU: each main() runs and its JSON has the documented fields, consistent with the workload
(rank counts, batch, requests routed). No timing is compared with a target here."""
from __future__ import annotations

import json

from benchmarks import router, tensor_parallel


def test_tensor_parallel_json(tmp_path):
    out = tmp_path / "tp.json"
    assert tensor_parallel.main(["--device", "cpu", "--model", "tiny", "--ranks", "1", "2",
                                 "--batch", "2", "--prompt", "8", "--new", "6",
                                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "tensor_parallel"
    rows = doc["rows"]
    assert [r["tp"] for r in rows][-1] == 2 and {r["batch"] for r in rows} == {2}
    for r in rows:
        assert r["tok_s"] > 0 and r["decode_steps"] >= 1 and r["ms_per_step"] > 0
        assert (r["comm_share"] > 0) == (r["tp"] > 1) and 0 <= r["comm_share"] < 1
    two = [r for r in rows if r["tp"] == 2][0]
    one = [r for r in rows if r["tp"] == 1][0]
    assert two["weight_bytes_per_rank"] < one["weight_bytes_per_rank"]


def test_router_json(tmp_path):
    out = tmp_path / "router.json"
    assert router.main(["--requests", "8", "--policy-requests", "50", "--wave", "4",
                        "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["measure"], r["policy"]) for r in rows] == [
        ("replicas", "prefix"), ("replicas", "round_robin"),
        ("policy", "prefix"), ("policy", "round_robin")]
    for r in rows:
        assert sum(r["routed"]) == r["requests"] and 0 <= r["hit_rate"] <= 1
        assert 0.5 <= r["busiest_share"] <= 1
