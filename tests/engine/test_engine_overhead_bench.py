"""Smoke test of benchmarks/engine_overhead.py at a tiny scale on the CPU: its stub of the
runner's forward must stay in step with ModelRunner._logits (a stub with the wrong signature
made every step fail while the script still printed a table). The oracle is the workload's own
output lengths: the run must produce every token, with no request ending in an error. Not a
timing test."""
from __future__ import annotations

import json

from benchmarks import engine_overhead


def test_engine_overhead_runs_the_whole_workload(tmp_path):
    out = tmp_path / "eo.json"
    args = ["--requests", "4", "--min-len", "5", "--max-len", "20", "--vocab", "64",
            "--max-num-seqs", "4", "--budget", "32", "--json", str(out)]
    assert engine_overhead.main(args) == 0      # raises when tokens are missing or errored
    (row,) = json.loads(out.read_text())["rows"]
    assert row["steps"] == row["decode_steps"] + row["mixed_steps"] > 0
    assert row["decode_steps"] > 0 and row["decode_ms_median"] > 0


def test_engine_overhead_refuses_a_stub_out_of_step(tmp_path, monkeypatch):
    """A runner failure in every step is an error of the benchmark, not a table."""
    def broken(self, *args, **kwargs):
        raise TypeError("stub out of step")
    real = engine_overhead.stub_engine

    def stub(a):
        e = real(a)
        e.runner._logits = broken.__get__(e.runner)
        return e
    monkeypatch.setattr(engine_overhead, "stub_engine", stub)
    try:
        engine_overhead.main(["--requests", "2", "--min-len", "5", "--max-len", "9", "--vocab",
                              "32", "--json", str(tmp_path / "x.json")])
    except RuntimeError as e:
        assert "errors" in str(e)
    else:
        raise AssertionError("engine_overhead accepted a run whose steps all failed")
