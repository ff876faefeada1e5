"""The engine in a process of its own (server/engine_process.py, `--engine-process`): the same
answers as the in-process engine (the oracle), the inspector's snapshot is the engine's pool,
a factory that fails is one line, and stopping the server ends the child."""
from __future__ import annotations

import asyncio
import time

import httpx2
import openai
import pytest
from server_helpers import MODEL, oracle, process_server, wait_idle

from llm_playground.model.engine.chat_template import encode_chat
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.server.app import ServerThread
from llm_playground.server.config import ServerConfig
from llm_playground.server.report_codec import decode_snapshot


@pytest.fixture(scope="module")
def srv():
    s = process_server(report_interval_s=0.05)
    yield s
    s.stop()


def cache_of(engine):
    return engine.cache_report()


def broken_factory():
    raise FileNotFoundError("no such model: /nowhere.gguf")


def test_answers_are_the_engines(srv):
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    tok = srv.state.tokenizer
    want = oracle([tok.encode_ordinary("hello there")], SamplingParams(max_tokens=10))[0, 0][0]
    assert c.completions.create(model=MODEL, prompt="hello there", max_tokens=10,
                                temperature=0).choices[0].text == want
    text = "".join(ch.choices[0].text for ch in c.completions.create(
        model=MODEL, prompt="hello there", max_tokens=10, temperature=0, stream=True))
    assert text == want
    messages = [{"role": "user", "content": "hi"}]
    ids = encode_chat(tok, srv.state.chat_template, messages)
    params = SamplingParams(max_tokens=6, temperature=0.8, seed=3, n=2)
    want = oracle([ids], params)
    r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0.8,
                                  seed=3, n=2)
    assert [ch.message.content for ch in r.choices] == [want[0, 0][0], want[0, 1][0]]


def test_inspector_snapshot_is_the_engines_pool(srv):
    httpx2.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": "abc def ghi", "max_tokens": 5})
    wait_idle(srv.url)
    time.sleep(0.3)                          # the idle engine's last picture comes through
    want = asyncio.run_coroutine_threadsafe(srv.state.bridge.call(cache_of),
                                            srv.state.bridge._loop).result(30)
    import json
    doc = None
    with httpx2.stream("GET", srv.url + "/inspect/reports", timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"cache"' in line:
                doc = json.loads(line[6:])
                break
    cache = decode_snapshot(doc)[0]
    assert [(b.state, b.ref_count, b.owners) for b in cache.blocks] == \
           [(b.state, b.ref_count, b.owners) for b in want.blocks]
    assert (cache.num_free, cache.num_cached, cache.num_used) == (want.num_free, want.num_cached, want.num_used)


def test_a_failing_factory_is_one_line():
    with pytest.raises(RuntimeError, match="FileNotFoundError: no such model"):
        ServerThread(config=ServerConfig(port=0), factory=broken_factory)


def test_stop_ends_the_child():
    s = process_server()
    proc = s.state.bridge._proc
    assert proc.is_alive()
    s.stop()
    assert not proc.is_alive()
