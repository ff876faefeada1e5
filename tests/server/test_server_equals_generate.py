"""Greedy output through the server equals `playground generate` for the same prompt: on the
tiny random Llama (load_model patched, as tests/engine/test_cli_playground.py does) and on the
real default model in float32 on the CPU (slow; fetched once)."""
from __future__ import annotations

import json

import openai
import pytest

from llm_playground import model
import llm_playground.model.weights.loader  # noqa: F401  (model.weights.loader as an attribute)
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.playground import cli
from llm_playground.server.app import ServerThread
from llm_playground.server.config import ServerConfig


def generate_json(argv, capsys) -> dict:
    assert cli.main(["generate", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def through_server(loaded, config: EngineConfig, prompt: str, max_tokens: int, chat=False) -> str:
    with ServerThread(Engine(loaded, config), ServerConfig(port=0)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=600)
        if chat:
            r = c.chat.completions.create(model=srv.state.model_name, max_tokens=max_tokens,
                                          temperature=0, messages=[{"role": "user", "content": prompt}])
            return r.choices[0].message.content, r.usage.completion_tokens
        r = c.completions.create(model=srv.state.model_name, prompt=prompt, max_tokens=max_tokens,
                                 temperature=0)
        return r.choices[0].text, r.usage.completion_tokens


def test_tiny_model_server_equals_generate(monkeypatch, capsys):
    from engine_helpers import tiny_loaded
    loaded = tiny_loaded(0)
    monkeypatch.setattr(model.weights.loader, "load_model", lambda *a, **k: loaded)
    want = generate_json(["--prompt", "hello there", "--max-tokens", "9", "--kv-blocks", "64"], capsys)
    text, n = through_server(loaded, EngineConfig(num_blocks=64), "hello there", 9)
    assert (text, n) == (want["text"], len(want["generated_ids"]))


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("chat", [False, True])
def test_default_model_float32_server_equals_generate(capsys, chat):
    from llm_playground.model.weights.loader import load_model
    prompt = "The three most important inventions of the nineteenth century were"
    argv = ["--prompt", prompt, "--max-tokens", "24", "--dtype", "float32", "--device", "cpu"]
    want = generate_json(argv + (["--chat"] if chat else []), capsys)
    loaded = load_model(None, "float32", "cpu")
    text, n = through_server(loaded, EngineConfig(dtype="float32", device="cpu"), prompt, 24, chat)
    assert text == want["text"] and n == len(want["generated_ids"])
