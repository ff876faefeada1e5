"""`playground generate` on a real (tiny) GGUF file: it says what it does from the first moment,
ends with llama.cpp-style timings on stderr, and keeps stdout for the answer alone.

Found as a newcomer (issue 22): nothing for ~9 s, then "loading"; no timings at the end.
Oracles: the engine run directly on the same file (the text and token counts stdout and the
timing lines must agree with), and the order of what reached stderr before loading began.
"""
from __future__ import annotations

import json
import re

import pytest

import llm_playground.model.weights.loader as loader
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground import cli
from tiny_gguf import write_tiny_gguf

NUM = r"(\d+\.\d+)"
LINES = {
    "load": re.compile(rf"^ +load time = +{NUM} ms$"),
    "prompt": re.compile(rf"^prompt eval time = +{NUM} ms / +(\d+) tokens \( +{NUM} ms per token, "
                         rf"+{NUM} tokens per second\)$"),
    "eval": re.compile(rf"^ +eval time = +{NUM} ms / +(\d+) runs +\( +{NUM} ms per token, "
                       rf"+{NUM} tokens per second\)$"),
    "total": re.compile(rf"^ +total time = +{NUM} ms / +(\d+) tokens$"),
}


def rate_agrees(rate: float, ms: float, n: int, half_unit: float = 0.005) -> bool:
    """Whether a printed rate (tokens per second, 2 decimals) is 1000 n / t for some t that the
    printed ms (2 decimals) rounds from: t in [ms - 0.005, ms + 0.005], so the rate lies in
    [1000 n / (ms + 0.005), 1000 n / (ms - 0.005)], give or take its own rounding. A relative
    tolerance would not do: at a few ms the ms rounding alone moves the rate by more than 0.1%."""
    lo = 1000 * n / (ms + half_unit)
    hi = 1000 * n / (ms - half_unit) if ms > half_unit else float("inf")
    return lo - half_unit <= rate <= hi + half_unit


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("cli") / "tiny.gguf", seed=3)


def expected(path, prompt: str, max_tokens: int):
    loaded = loader.load_model(path, "float32", device="cpu")
    ids = loaded.tokenizer.encode_ordinary(prompt)
    engine = Engine(loaded, EngineConfig(num_blocks=64))
    out = engine.generate(ids, SamplingParams(max_tokens=max_tokens))
    eos = set(loaded.config.eos_token_ids)
    return ids, out, loaded.tokenizer.decode([t for t in out if t not in eos])


def timing_lines(err: str) -> dict:
    found = {}
    for line in err.splitlines():
        for key, pattern in LINES.items():
            if m := pattern.match(line):
                found[key] = m.groups()
    return found


def test_generate_prints_stages_first_and_timings_last(gguf_path, capsys, monkeypatch):
    before_loading = {}
    real_load = loader.load_model

    def spy(*a, **k):
        before_loading.setdefault("err", capsys.readouterr().err)   # stderr when loading began
        return real_load(*a, **k)

    monkeypatch.setattr(loader, "load_model", spy)
    argv = ["generate", "--model", str(gguf_path), "--prompt", "abc cab", "--max-tokens", "6",
            "--dtype", "float32", "--device", "cpu", "--kv-blocks", "64"]
    assert cli.main(argv) == 0
    cap = capsys.readouterr()
    ids, out, text = expected(gguf_path, "abc cab", 6)
    assert cap.out == text + "\n"                            # stdout: the answer only
    assert before_loading["err"].startswith(f"loading {gguf_path} ...")
    err = before_loading["err"] + cap.err
    assert err.index("reading ") < err.index("loading tiny-gguf") < err.index("load time")
    found = timing_lines(cap.err)
    assert set(found) == set(LINES), cap.err
    assert int(found["prompt"][1]) == len(ids)
    assert int(found["eval"][1]) == len(out) - 1             # the first token comes from the prompt
    assert int(found["total"][1]) == len(ids) + len(out)
    prompt_ms, _, per_token, rate = map(float, found["prompt"])
    assert per_token == pytest.approx(prompt_ms / len(ids), abs=0.01)
    assert rate_agrees(rate, prompt_ms, len(ids))
    assert float(found["load"][0]) <= float(found["total"][0])
    assert cap.err.rstrip().splitlines()[-1].lstrip().startswith("total time")


def test_generate_json_keeps_stdout_one_document(gguf_path, capsys):
    argv = ["generate", "--model", str(gguf_path), "--prompt", "abc", "--max-tokens", "4",
            "--dtype", "float32", "--device", "cpu", "--kv-blocks", "64", "--json"]
    assert cli.main(argv) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    ids, out, text = expected(gguf_path, "abc", 4)
    assert doc["generated_ids"] == out and doc["text"] == text
    assert doc["timings"]["load_s"] > 0
    found = timing_lines(cap.err)
    assert set(found) == set(LINES)
    assert float(found["load"][0]) == pytest.approx(doc["timings"]["load_s"] * 1000, abs=0.01)


@pytest.mark.parametrize("prefill_s,n", [(0.0012345, 7), (0.0020049, 3), (0.0456789, 11), (1.5, 2)])
def test_the_rate_check_holds_to_the_printed_precision(capsys, prefill_s, n):
    """print_timings' own lines at a few ms (where the ms rounding moves the rate by more than
    0.1%): the check accepts its rate and refuses one a unit of the last printed digit off."""
    cli.print_timings(0.1, {"timings": {"prefill_s": prefill_s, "prefill_tokens": n, "decode_s": 0.0,
                                        "decode_tokens": 0}, "prompt_ids": [0] * n, "generated_ids": []},
                      1.0)
    prompt_ms, _, _, rate = map(float, timing_lines(capsys.readouterr().err)["prompt"])
    assert rate_agrees(rate, prompt_ms, n)
    hi = 1000 * n / (prompt_ms - 0.005)
    assert not rate_agrees(hi + 0.02, prompt_ms, n)
