"""`playground generate` / `chat --plain` on the tiny model (load_model patched), and the
one-line errors a user sees."""
from __future__ import annotations

import io
import json

import pytest

from llm_playground import model
import llm_playground.model.weights.loader  # noqa: F401  (makes model.weights.loader an attribute)
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground import cli
from engine_helpers import engine, tiny_loaded


@pytest.fixture
def tiny(monkeypatch):
    loaded = tiny_loaded(0)
    monkeypatch.setattr(model.weights.loader, "load_model", lambda *a, **k: loaded)
    return loaded


def test_generate_json_matches_the_engine(tiny, capsys):
    assert cli.main(["generate", "--prompt", "hello there", "--max-tokens", "9", "--json",
                     "--kv-blocks", "64"]) == 0
    out = json.loads(capsys.readouterr().out)
    ids = tiny.tokenizer.encode_ordinary("hello there")
    assert out["prompt_ids"] == ids
    want = engine().generate(ids, SamplingParams(max_tokens=9))
    assert out["generated_ids"] == want
    assert out["text"] == tiny.tokenizer.decode([t for t in want if t not in tiny.config.eos_token_ids])
    ended_by_eos = bool(want) and want[-1] in tiny.config.eos_token_ids
    assert out["timings"]["ttft_s"] > 0
    assert out["finish_reason"] == ("end_of_sequence" if ended_by_eos else "max_tokens")


def test_generate_streams_text(tiny, capsys):
    assert cli.main(["generate", "--prompt", "abc", "--max-tokens", "5", "--kv-blocks", "64"]) == 0
    want = engine().generate(tiny.tokenizer.encode_ordinary("abc"), SamplingParams(max_tokens=5))
    text = tiny.tokenizer.decode([t for t in want if t not in tiny.config.eos_token_ids])
    assert capsys.readouterr().out == text + "\n"


@pytest.mark.parametrize("argv,needle", [
    (["generate", "--prompt", "x", "--model", "/no/such/model.gguf"], "no such file"),
    (["generate", "--prompt", ""], "empty prompt"),
    (["generate", "--prompt", "x", "--temperature", "-1"], "temperature"),
    (["--attention", "wide:3", "generate", "--prompt", "x"], "attention pattern"),
    (["generate", "--prompt", "x", "--chat", "--kv-blocks", "8"], "chat template"),
    (["chat"], "--plain"),
])
def test_errors_are_one_line_and_exit_1(tiny, monkeypatch, capsys, argv, needle):
    if "/no/such" in " ".join(argv):
        monkeypatch.undo()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("playground: error:")]) == 1
    assert needle in err[-1] and "Traceback" not in "\n".join(err)


def test_chat_plain_keeps_the_conversation(tiny, monkeypatch, capsys):
    from llm_playground.model.engine.engine import Engine
    seen = []
    real_iter = Engine.iter_outputs

    def spy(self, ids, *a, **k):
        seen.append(list(ids))
        return real_iter(self, ids, *a, **k)

    monkeypatch.setattr(Engine, "iter_outputs", spy)
    monkeypatch.setattr(tiny, "chat_template",
                        "{% for m in messages %}<a>{{ m['role'] }}\n{{ m['content'] }}<b>{% endfor %}"
                        "{% if add_generation_prompt %}<a>assistant\n{% endif %}")
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n/reset\nhi\nagain\n/exit\n"))
    assert cli.main(["chat", "--plain", "--max-tokens", "4", "--kv-blocks", "64"]) == 0
    assert len(seen) == 3 and seen[0] == seen[1]            # /reset forgot the first turn
    assert seen[2][:len(seen[1])] == seen[1] and len(seen[2]) > len(seen[1]) + 4


def test_chat_plain_with_piped_input_prints_only_the_replies(tiny, monkeypatch, capsys):
    """`echo hi | playground chat --plain > out.txt`: stdout is the replies, one per line,
    without "> " prompts mixed in (they are for a terminal)."""
    from llm_playground.model.engine.engine import Engine
    replies = []
    real_iter = Engine.iter_outputs

    def spy(self, ids, *a, **k):
        replies.append("")
        for out in real_iter(self, ids, *a, **k):
            replies[-1] += out.text_delta
            yield out

    monkeypatch.setattr(Engine, "iter_outputs", spy)
    monkeypatch.setattr(tiny, "chat_template",
                        "{% for m in messages %}<a>{{ m['role'] }}\n{{ m['content'] }}<b>{% endfor %}"
                        "{% if add_generation_prompt %}<a>assistant\n{% endif %}")
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\nagain\n"))
    assert cli.main(["chat", "--plain", "--max-tokens", "4", "--kv-blocks", "64"]) == 0
    assert len(replies) == 2
    assert capsys.readouterr().out == "".join(r + "\n" for r in replies)


def test_generate_json_reports_speculation_and_says_what_it_refuses(tiny, capsys):
    """--speculate: the JSON's speculation figures are the engine's own counts for the request
    (oracle: the same request on an engine, summed from its outputs and reports), and a
    pattern speculation refuses is said on stderr, with the output unchanged."""
    argv = ["generate", "--prompt", "hello hello", "--max-tokens", "12", "--json", "--kv-blocks",
            "64", "--speculate", "draft:layers=1:3"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    ids = tiny.tokenizer.encode_ordinary("hello hello")
    e = engine(speculate="draft:layers=1:3")
    e.add_request(ids, SamplingParams(max_tokens=12))
    rows = proposed = accepted = 0
    while e.has_unfinished():
        r = e.step()
        rows += r.spec_rows
        proposed += sum(o.spec_proposed for o in r.outputs)
        accepted += sum(o.spec_accepted for o in r.outputs)
    spec = out["speculation"]
    assert rows > 0 and spec["verify_rows"] == rows
    assert (spec["proposed"], spec["accepted"]) == (proposed, accepted)
    assert spec["acceptance"] == accepted / proposed
    assert spec["tokens_per_verify_row"] == 1 + accepted / rows
    assert out["generated_ids"] == engine().generate(ids, SamplingParams(max_tokens=12))
    assert cli.main(argv[:-2] + ["--speculate", "ngram:3", "--attention", "local:8"]) == 0
    cap = capsys.readouterr()
    assert "note: speculation off for this request: the sliding attention pattern local:8" in cap.err
    assert json.loads(cap.out)["speculation"]["verify_rows"] == 0
