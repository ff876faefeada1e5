"""Smoke tests for benchmarks/chunked_prefill.py, throughput.py, choices_cost.py and
step_anatomy.py: each script's main()
runs at the tiniest scale on CPU and the JSON it writes has the documented fields with values
consistent with the workload (token counts, step counts, percentile order). Not a timing test:
no figure is compared with a target here."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks import choices_cost, chunked_prefill, step_anatomy, throughput


def test_chunked_prefill_json(tmp_path):
    out = tmp_path / "cp.json"
    decodes, prompt_len, budget = 2, 70, 32
    rc = chunked_prefill.main(["--model", "tiny", "--device", "cpu", "--decodes", str(decodes),
                               "--decode-prompt", "8", "--prompt-len", str(prompt_len),
                               "--budget", str(budget), "--warmup", "2", "--steps", "4",
                               "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "chunked_prefill"
    rows = {r["mode"]: r for r in doc["rows"]}
    assert list(rows) == ["undisturbed", "chunked", "unchunked"]
    chunk_steps = math.ceil(prompt_len / (budget - decodes))
    for mode, r in rows.items():
        assert r["steps"] >= chunk_steps + 8       # the window covers the chunked prefill
        assert 0 < r["itl_p50_ms"] <= r["itl_p99_ms"] <= r["itl_max_ms"]
    assert rows["undisturbed"]["prefill_steps"] == 0
    assert rows["undisturbed"]["long_prompt_ttft_s"] is None
    # The long prompt is split into budget-sized chunks beside the decodes ...
    assert rows["chunked"]["prefill_steps"] == chunk_steps
    assert rows["chunked"]["budget"] == budget
    # ... or runs whole in one step.
    assert rows["unchunked"]["prefill_steps"] == 1
    assert rows["unchunked"]["budget"] == prompt_len + decodes
    for mode in ("chunked", "unchunked"):
        assert rows[mode]["long_prompt_ttft_s"] > 0
    s = doc["summary"]
    assert s["p99_chunked_over_undisturbed"] == pytest.approx(
        rows["chunked"]["itl_p99_ms"] / rows["undisturbed"]["itl_p99_ms"])
    assert s["p99_unchunked_over_undisturbed"] == pytest.approx(
        rows["unchunked"]["itl_p99_ms"] / rows["undisturbed"]["itl_p99_ms"])
    assert s["target_met"] == (s["p99_chunked_over_undisturbed"] <= 1.5)


def test_chunked_prefill_rejects_bad_budget(capsys):
    with pytest.raises(SystemExit):
        chunked_prefill.main(["--model", "tiny", "--device", "cpu", "--decodes", "8", "--budget", "8"])
    assert "--budget (8) must exceed --decodes (8)" in capsys.readouterr().err


def test_percentile_matches_statistics():
    import statistics
    xs = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0]
    # statistics.quantiles 'inclusive' uses numpy's linear rule
    assert chunked_prefill.percentile(xs, 50) == pytest.approx(statistics.median(xs))
    q = statistics.quantiles(xs, n=100, method="inclusive")
    assert chunked_prefill.percentile(xs, 99) == pytest.approx(q[98])


def test_throughput_json(tmp_path):
    out = tmp_path / "tp.json"
    n, lo, hi = 3, 4, 12
    rc = throughput.main(["--model", "tiny", "--device", "cpu", "--requests", str(n),
                          "--min-len", str(lo), "--max-len", str(hi), "--hf-batch", "2",
                          "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "throughput"
    *runs, hf = doc["rows"]
    assert [r["runtime"] for r in runs] == ["ours (continuous, budget 2048)",
                                            "ours (continuous, budget 8192)"]
    for r in runs:
        assert r["speedup"] == pytest.approx(hf["seconds"] / r["seconds"])
    ours = runs[0]                                            # the headline: the first budget
    s = doc["summary"]
    reqs = throughput.workload(n, lo, hi, 1000, 0)            # the same seeded workload
    assert s["output_tokens"] == sum(o for _, o in reqs)
    assert s["prompt_tokens"] == sum(len(p) for p, _ in reqs)
    assert all(lo <= len(p) <= hi and lo <= o <= hi for p, o in reqs)
    # static batches run to their longest member: batches of 2 then 1
    assert hf["generated_tokens"] == 2 * max(o for _, o in reqs[:2]) + reqs[2][1]
    assert ours["output_tok_s"] == pytest.approx(s["output_tokens"] / ours["seconds"])
    assert hf["output_tok_s"] == pytest.approx(s["output_tokens"] / hf["seconds"])
    assert s["speedup_vs_transformers"] == pytest.approx(hf["seconds"] / ours["seconds"])
    assert ours["preemptions"] == 0
    # each request needs at least its own number of decode steps
    assert ours["steps"] >= max(o for _, o in reqs)
    assert s["weight_bytes"] > 0 and s["copy_bandwidth_GBps"] > 0
    # KV read per step is at least the longest prompt's K/V once
    assert s["kv_bytes_read"] > 0
    assert ours["fraction_of_floor"] == pytest.approx(ours["floor_s"] / ours["seconds"])
    assert 0 < ours["fraction_of_floor"]


def test_throughput_rejects_unknown_model(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--model", "gpt9", "--device", "cpu"])
    assert "--model must be smollm2, llama8b or tiny" in capsys.readouterr().err


def test_choices_cost_json(tmp_path):
    out = tmp_path / "cc.json"
    rc = choices_cost.main(["--model", "tiny", "--new-tokens", "4", "--rounds", "1", "--vocab", "300",
                            "--reps", "2", "--threads", "1", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "choices_cost" and doc["k"] == 8
    assert [r["unit"] for r in doc["rows"]] == ["ms", "ms", "tok/s"]
    for r in doc["rows"]:
        assert r["off"] > 0 and r["on"] > 0 and r["on/off"] == pytest.approx(r["on"] / r["off"])
    assert len(doc["runs_tok_s"]["off"]) == len(doc["runs_tok_s"]["on"]) == 1


def test_step_anatomy_json(tmp_path):
    out = tmp_path / "sa.json"
    n, lo, hi = 4, 6, 20
    rc = step_anatomy.main(["--model", "tiny", "--device", "cpu", "--requests", str(n),
                            "--min-len", str(lo), "--max-len", str(hi), "--budget", "32",
                            "--profile-steps", "4", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "step_anatomy"
    off, on = doc["rows"]
    assert (off["mode"], on["mode"]) == ("overlap off", "overlap on")
    want = sum(o for _, o in throughput.workload(n, lo, hi, 1000, 0))
    for r in (off, on):
        assert r["output_tokens"] == want                    # every requested token came out
        assert r["steps"] > 0 and r["host_ms_p50"] > 0 and r["device_ms_p50"] > 0
        assert r["gap_ms_p50"] is None and r["kernels_per_token"] is None     # CUDA only
        assert r["launches_per_token"] > 0 and 0 < r["profiled_steps"] <= 4
    s = doc["summary"]
    assert s["same_tokens"] is True and s["identical_requests"] == 1.0
    assert s["speedup_overlap"] == pytest.approx(off["seconds"] / on["seconds"])


def test_speculation_json(tmp_path):
    """The CPU mode on the tiny model: one row per prompt and dtype, ratios from the same run,
    greedy output identical with speculation on (the benchmark's own check)."""
    from benchmarks import speculation
    out = tmp_path / "spec.json"
    assert speculation.main(["--model", "tiny", "--new-tokens", "6", "--repeats", "1",
                             "--dtypes", "float32", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "speculation" and doc["mode"] == "cpu" and doc["k"] == 4
    kinds = {(r["kind"], r["prompt"]) for r in doc["rows"]}
    assert {k for k, _ in kinds} == {"copying", "other"} and len(kinds) == 6
    for r in doc["rows"]:
        assert r["identical"] and r["ratio"] == pytest.approx(r["on_tok_s"] / r["off_tok_s"])
        assert 0 <= r["acceptance"] <= 1 and r["tokens_per_step"] >= 1
    est = speculation.estimates(doc["rows"], [{"model": "m", "batch": 1, "k": 4, "ratio_graph":
                                               1.25, "ratio_eager": 1.5}], 4)
    for e, r in zip(est, doc["rows"]):
        f = r["verify_share"]
        assert e["speedup"] == pytest.approx(r["tokens_per_step"] / (f * 1.25 + 1 - f))
