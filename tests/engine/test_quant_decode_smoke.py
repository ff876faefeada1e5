"""Smoke test for benchmarks/quant_decode.py's CPU form: main() on a tiny GGUF writes one row per
weight format (each with a decode rate, the stored weights named) and a llama.cpp row that says
why it is missing when the given Python cannot import llama_cpp. Not a timing test."""
from __future__ import annotations

import json
import sys

from benchmarks import quant_decode
from tiny_gguf import write_tiny_gguf


def test_quant_decode_cpu_json(tmp_path, monkeypatch):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "qd.json"
    monkeypatch.delenv("LLAMA_CPP_PYTHON", raising=False)
    rc = quant_decode.main(["--device", "cpu", "--model", str(path), "--new-tokens", "4",
                            "--threads", "1", "--rounds", "2", "--llama-cpp-python", sys.executable + "-missing",
                            "--no-transformers", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "quant_decode" and doc["threads"] == 1
    rows = doc["rows"]
    ours = [r for r in rows if r["system"].startswith("ours")]
    assert [r["weights"] for r in ours] == ["default", "int8", "native", "int4", "float"]
    assert all(r["decode_tok_s"] > 0 and "error" not in r and r["load"] >= 0 for r in ours)
    assert ours[0]["system"].endswith("(CPU default)")
    assert all(len(r["rounds"]) == 2 and r["decode_tok_s"] == max(r["rounds"]) for r in ours)
    assert ours[3]["system"].startswith("ours int4") and ours[4]["dtype"] == "float32"
    assert ours[4]["agree_float32"] == len(ours[4]["ids"]) == 4       # float32 against itself
    (hf,) = [r for r in rows if r["system"].startswith("transformers")]
    assert hf["error"] == "skipped: --no-transformers"
    (cpp,) = [r for r in rows if r["system"] == "llama.cpp"]
    assert cpp["error"].startswith("skipped: neither llama_cpp nor llama_cpp_py_sync imports")
