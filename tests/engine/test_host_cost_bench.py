"""Smoke test of benchmarks/host_cost.py at the tiniest scale on CPU: the JSON has the documented
fields, the token count is the workload's (the script's own oracle: the generator's output
lengths), and the primary metric, Python calls per step, is deterministic: a second run of the
same workload counts exactly the same calls. Not a timing test."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import host_cost

ARGS = ["--requests", "3", "--min-len", "4", "--max-len", "9", "--repeats", "1", "--top", "5"]


def _run(tmp_path, name, extra=()):
    out = tmp_path / name
    assert host_cost.main([*ARGS, "--trees", "ours", *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_host_cost_counts_are_deterministic_and_complete(tmp_path):
    a, b = _run(tmp_path, "a.json"), _run(tmp_path, "b.json")
    assert a["benchmark"] == "host_cost" and a["summary"]["requests"] == 3
    (ra,), (rb,) = a["rows"], b["rows"]
    want = sum(o for _, o in host_cost.workload(3, 4, 9, 1000, 0))
    assert ra["output_tokens"] == want
    assert ra["host_calls"] == rb["host_calls"] and ra["calls"] == rb["calls"]
    assert ra["steps"] == rb["steps"] > 0
    # every call includes the host's own; the forward adds its calls on top
    assert ra["calls"] > ra["host_calls"] > 0
    assert ra["host_calls_per_token"] == pytest.approx(ra["host_calls"] / want)
    assert ra["host_ms_per_step"] > 0 and len(ra["host_ms_per_step_runs"]) == 1
    assert len(ra["top_by_calls"]) == 5


def test_host_cost_overlap_gives_the_same_tokens(tmp_path):
    on = _run(tmp_path, "on.json", ["--overlap", "on", "--no-count-forward"])
    (r,) = on["rows"]
    assert r["tree"] == "ours (overlap on)" and "calls" not in r
    assert r["output_tokens"] == sum(o for _, o in host_cost.workload(3, 4, 9, 1000, 0))


def test_host_cost_runs_the_old_layout(tmp_path):
    """The old layout is exported from this repository's history (git archive ff0aedf)."""
    root = Path(__file__).resolve().parents[2]
    base = tmp_path / "base"
    base.mkdir()
    tar = subprocess.run(["git", "-C", str(root), "archive", "ff0aedf"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(base)], input=tar.stdout, check=True)
    out = tmp_path / "base.json"
    assert host_cost.main([*ARGS, "--trees", "base", "--base", str(base), "--no-count-forward",
                           "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["rows"]
    assert r["tree"] == "base" and r["host_calls"] > 0
    assert r["output_tokens"] == sum(o for _, o in host_cost.workload(3, 4, 9, 1000, 0))
