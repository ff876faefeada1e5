"""Bad input gets the right status and OpenAI's error shape, and nothing else is affected: after
every refusal the same server still answers a good request with the engine's text.

Statuses: 400 malformed JSON, wrong types, bad values (negative n, top_p 0), a prompt over the
context or prompt + max_tokens over it (code context_length_exceeded); unknown fields are ignored
(as vLLM does); 404 unknown model; 413 a 10 MB body; 401 a missing or wrong API key (/health
stays open); 503 when --max-queue requests are already in the server."""
from __future__ import annotations

import json
import threading
import time

import httpx2
import openai
import pytest
from server_helpers import MODEL, oracle, server, tiny, wait_idle

from llm_playground.model.engine.sampling_params import SamplingParams

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def srv():
    s = server(tiny(), api_key=KEY)
    yield s
    s.stop()


def post(srv, path, body, headers=AUTH, raw=False):
    data = body if raw else json.dumps(body).encode()
    return httpx2.post(srv.url + path, content=data, timeout=30,
                       headers={"Content-Type": "application/json", **headers})


def assert_error(r, status, code=None, param=None, needle=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and "\n" not in err["message"] and err["message"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    if needle is not None:
        assert needle in err["message"], err


def still_serves(srv):
    want = oracle([srv.state.tokenizer.encode_ordinary("abc")], SamplingParams(max_tokens=4))[0, 0][0]
    r = post(srv, "/v1/completions", {"model": MODEL, "prompt": "abc", "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == want


GOOD = {"model": MODEL, "prompt": "abc", "max_tokens": 4}


@pytest.mark.parametrize("body,code,param,needle", [
    (b'{"model": "tiny-llama", "prompt": ', "invalid_json", None, "not valid JSON"),
    (b"[1, 2]", "invalid_json", None, "JSON object"),
    (b"", "invalid_json", None, "empty"),
    ({**GOOD, "max_tokens": "4"}, "invalid_value", "max_tokens", "integer"),
    ({**GOOD, "max_tokens": 1.5}, "invalid_value", "max_tokens", "integer"),
    ({**GOOD, "temperature": "hot"}, "invalid_value", "temperature", "number"),
    ({**GOOD, "prompt": 42}, "invalid_value", "prompt", None),
    ({**GOOD, "stream": "yes"}, "invalid_value", "stream", "boolean"),
    ({**GOOD, "n": -1}, "invalid_value", "n", "greater than or equal to 1"),
    ({**GOOD, "n": 0}, "invalid_value", "n", None),
    ({**GOOD, "top_p": 0}, "invalid_value", "top_p", None),
    ({**GOOD, "logprobs": 50}, "invalid_value", "logprobs", None),
    ({**GOOD, "prompt": ""}, None, "prompt", "empty prompt"),
    ({**GOOD, "prompt": [1, 2, 99999]}, None, "prompt", "outside the vocabulary"),
    ({**GOOD, "stop": [""]}, None, "stop", "empty"),
    ({**GOOD, "echo": True}, "unsupported", "echo", None),
    ({**GOOD, "presence_penalty": 0.5}, "unsupported", "presence_penalty", None),
    ({"prompt": "abc"}, "invalid_value", "model", "required"),
])
def test_bad_completion_bodies_are_400(srv, body, code, param, needle):
    assert_error(post(srv, "/v1/completions", body, raw=isinstance(body, bytes)), 400, code, param, needle)


@pytest.mark.parametrize("body,param", [
    ({"model": MODEL, "messages": "hi"}, "messages"),
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
])
def test_bad_chat_bodies_are_400(srv, body, param):
    assert_error(post(srv, "/v1/chat/completions", body), 400, param=param)


def test_unknown_fields_are_ignored(srv):
    want = oracle([srv.state.tokenizer.encode_ordinary("abc")], SamplingParams(max_tokens=4))[0, 0][0]
    r = post(srv, "/v1/completions", {**GOOD, "temperature": 0, "frobnicate": {"a": [1]}, "x": None})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == want
    r = post(srv, "/v1/chat/completions", {"model": MODEL, "max_tokens": 3, "extra_field": 1,
                                            "messages": [{"role": "user", "content": "hi", "name": "bob"}]})
    assert r.status_code == 200


def test_prompt_over_the_context_is_400_context_length_exceeded(srv):
    ctx = srv.state.max_model_len
    assert_error(post(srv, "/v1/completions", {**GOOD, "prompt": [65] * ctx}), 400,
                 "context_length_exceeded", "prompt")
    still_serves(srv)


def test_huge_max_tokens_is_400_context_length_exceeded(srv):
    for n in (10**6, 10**30):
        assert_error(post(srv, "/v1/completions", {**GOOD, "max_tokens": n}), 400,
                     None if n > 2**63 else "context_length_exceeded")
    still_serves(srv)


def test_unknown_model_is_404(srv):
    assert_error(post(srv, "/v1/completions", {**GOOD, "model": "gpt-5"}), 404, "model_not_found", "model")
    assert_error(post(srv, "/v1/chat/completions", {"model": "gpt-5", "messages": [
        {"role": "user", "content": "x"}]}), 404, "model_not_found")
    r = httpx2.get(srv.url + "/v1/models/gpt-5", headers=AUTH)
    assert_error(r, 404, "model_not_found")


def test_ten_megabyte_body_is_413(srv):
    body = json.dumps({**GOOD, "prompt": "a" * (10 * 2**20)}).encode()
    assert_error(post(srv, "/v1/completions", body, raw=True), 413, "request_too_large")
    still_serves(srv)


def test_api_key(srv):
    assert_error(post(srv, "/v1/completions", GOOD, headers={}), 401, "invalid_api_key", needle="missing")
    assert_error(post(srv, "/v1/completions", GOOD, headers={"Authorization": "Bearer nope"}), 401,
                 "invalid_api_key", needle="incorrect")
    assert_error(post(srv, "/v1/completions", GOOD, headers={"Authorization": KEY}), 401, "invalid_api_key")
    for path in ("/v1/models", "/metrics", "/inspect/reports"):
        assert_error(httpx2.get(srv.url + path), 401, "invalid_api_key")
    assert httpx2.get(srv.url + "/health").status_code == 200
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.models.list()
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    assert c.completions.create(model=MODEL, prompt="abc", max_tokens=2).usage.completion_tokens == 2


def test_openai_client_sees_typed_errors(srv):
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model=MODEL, prompt="abc", max_tokens=4, n=-1)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="other", prompt="abc", max_tokens=4)


def test_queue_full_is_503_and_the_queued_finish():
    """--max-queue 2: two slow streams hold the server; a third request is refused with 503
    (code queue_full) while they run, and both finish with all their tokens."""
    from tiny_engine import FakeClock
    s = server(tiny(clock=FakeClock(real_s=0.02)), max_queue=2)
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        done = []

        def run():
            r = c.completions.create(model=MODEL, prompt="abc", max_tokens=20, stream=True,
                                     stream_options={"include_usage": True})
            done.append([ch for ch in r][-1].usage.completion_tokens)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while s.state.bridge.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx2.post(s.url + "/v1/completions", json={**GOOD, "max_tokens": 2})
        assert_error(r, 503, "queue_full")
        for t in threads:
            t.join(60)
        assert done == [20, 20]
        r = httpx2.post(s.url + "/v1/completions", json={**GOOD, "max_tokens": 2})
        assert r.status_code == 200
    finally:
        s.stop()


def test_client_that_leaves_a_non_streaming_request_aborts_it():
    """A non-streaming client that times out: its request is aborted (finish reason aborted in
    the metrics) and its blocks are free; the server goes on."""
    from server_helpers import value
    from tiny_engine import FakeClock
    s = server(tiny(clock=FakeClock(real_s=0.02)))
    try:
        with pytest.raises(httpx2.TimeoutException):
            httpx2.post(s.url + "/v1/completions", json={**GOOD, "max_tokens": 200}, timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            fams = wait_idle(s.url)
            if value(fams, "playground_request_finished_total", 'finish_reason="aborted"') == 1:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert value(fams, "playground_generation_tokens_total") < 200
        assert value(fams, "playground_kv_blocks", 'state="used"') == 0
        assert value(fams, "playground_kv_blocks", 'state="shared"') == 0
        r = httpx2.post(s.url + "/v1/completions", json={**GOOD, "max_tokens": 2})
        assert r.status_code == 200
    finally:
        s.stop()
