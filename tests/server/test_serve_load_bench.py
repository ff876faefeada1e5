"""benchmarks/serve_load.py at the smallest size on the CPU (what `make bench-cpu` runs, smaller):
the server process starts, both sides produce every token of the workload, and the JSON has the
documented fields with consistent values. Not a timing test: no ratio is asserted (CI machines
are shared and noisy); the ratio is only checked to be the quotient of the two rows."""
from __future__ import annotations

import json

import pytest

from benchmarks import serve_load


def test_serve_load_small(tmp_path):
    out = tmp_path / "sl.json"
    argv = ["--model", "tiny", "--device", "cpu", "--requests", "6", "--min-len", "4",
            "--max-len", "12", "--threads", "1", "--repeats", "2", "--json", str(out)]
    assert serve_load.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "serve_load"
    a = serve_load.parse_args(argv)
    expected = [sum(o for _, o in serve_load.workload(a, 1000, rep)) for rep in range(2)]
    runs = doc["runs"]
    assert [r["output_tokens"] for r in runs["in_process"]] == expected
    assert [r["output_tokens"] for r in runs["server"]] == expected
    base, srv = doc["rows"]
    assert base["runtime"] == "in-process engine" and srv["runtime"].startswith("through the server")
    for row in doc["rows"]:
        assert row["output_tok_s"] == pytest.approx(row["output_tokens"] / row["seconds"])
        assert 0 < row["ttft_p50_ms"] <= row["ttft_p90_ms"] <= row["ttft_p99_ms"]
        assert 0 < row["itl_p50_ms"] <= row["itl_p90_ms"] <= row["itl_p99_ms"]
    assert srv["server_preemptions"] == 0          # the pool holds every request
    s = doc["summary"]
    assert s["throughput_ratio"] == pytest.approx(srv["output_tok_s"] / base["output_tok_s"])
    assert s["ratio_per_run"] == pytest.approx([b["output_tok_s"] and sv["output_tok_s"] / b["output_tok_s"]
                                                for b, sv in zip(runs["in_process"], runs["server"])])
    assert s["target_met"] == (s["throughput_ratio"] >= 0.9)


def test_token_counting_of_chunks():
    tok, width = serve_load.id_tokenizer(1000)
    mid = '{"id": "x", "choices": [{"index": 0, "text": "007 012 ", "logprobs": null, "finish_reason": null}]}'
    assert serve_load._tokens_in(mid, width) == 2
    last = '{"id": "x", "choices": [{"index": 0, "text": "999 ", "finish_reason": "length"}]}'
    assert serve_load._tokens_in(last, width) == 1
    with pytest.raises(RuntimeError, match="stream error"):
        serve_load._tokens_in('{"error": {"message": "boom"}}', width)
    assert tok.decode([7, 12]) == "007 012 "


@pytest.mark.slow
def test_bench_cpu_serve_stage_writes_its_json(tmp_path):
    """`make bench-cpu STAGES=serve` (benchmarks/cpu_run.sh): the JSON lands in $OUT."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PY": sys.executable}
    done = subprocess.run(["bash", str(root / "benchmarks" / "cpu_run.sh"), "serve"], cwd=root, env=env,
                          text=True, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = (tmp_path / "out").glob("serve_load-*.json")
    doc = json.loads(path.read_text())
    assert doc["config"]["requests"] == 32 and len(doc["runs"]["server"]) == 3
