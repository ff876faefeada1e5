"""The OpenAI API through the real `openai` client against a real server (uvicorn on a loopback
port) on the tiny random Llama; the oracle is the same model on an in-process engine: the texts,
token counts and log-probabilities the server returns must be the engine's own (log-probabilities
within 1e-4: a prompt served from the prefix cache is computed in a different float32 order)."""
from __future__ import annotations

import openai
import pytest
from server_helpers import MODEL, oracle, server, tiny

from llm_playground.model.engine.chat_template import encode_chat
from llm_playground.model.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def srv():
    s = server(tiny())
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


def ids_of(srv, text: str) -> list[int]:
    return srv.state.tokenizer.encode_ordinary(text)


def chat_ids(srv, messages) -> list[int]:
    return encode_chat(srv.state.tokenizer, srv.state.chat_template, messages)


def test_models_and_health(srv, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    import httpx2
    assert httpx2.get(srv.url + "/health").json() == {"status": "ok"}


def test_completion_greedy_is_the_engines(srv, client):
    prompt = "hello there"
    want = oracle([ids_of(srv, prompt)], SamplingParams(max_tokens=12))[0, 0]
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
    c = r.choices[0]
    assert c.text == want[0]
    assert c.finish_reason == "length" and c.model_extra["finish_detail"] == "max_tokens"
    assert r.usage.prompt_tokens == len(ids_of(srv, prompt))
    assert r.usage.completion_tokens == len(want[1]) == 12


def test_completion_stream_is_the_engines(srv, client):
    prompt = "the cat sat"
    want = oracle([ids_of(srv, prompt)], SamplingParams(max_tokens=10))[0, 0]
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == want[0]
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


@pytest.mark.parametrize("stream", [False, True])
def test_chat_is_the_engines_on_the_template(srv, client, stream):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    want = oracle([chat_ids(srv, messages)], SamplingParams(max_tokens=9))[0, 0]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=9, temperature=0,
                                       stream=stream)
    if stream:
        chunks = list(r)
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
        assert chunks[-1].choices[0].finish_reason == "length"
    else:
        text = r.choices[0].message.content
        assert r.usage.prompt_tokens == len(chat_ids(srv, messages))
    assert text == want[0]


@pytest.mark.parametrize("stream", [False, True])
def test_n_samples_are_the_engines_seeded_samples(srv, client, stream):
    prompt = "once upon"
    params = SamplingParams(max_tokens=8, temperature=0.9, seed=7, n=3)
    want = oracle([ids_of(srv, prompt)], params)
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0.9, seed=7,
                                  n=3, stream=stream)
    texts = ["", "", ""]
    if stream:
        for ch in r:
            for c in ch.choices:
                texts[c.index] += c.text
    else:
        assert [c.index for c in r.choices] == [0, 1, 2]
        texts = [c.text for c in r.choices]
        assert r.usage.completion_tokens == 24
    assert texts == [want[0, i][0] for i in range(3)]
    assert len(set(texts)) > 1            # three different samples, not one copied


def test_several_prompts_number_their_choices(srv, client):
    prompts = ["abc", "hello"]
    want = oracle([ids_of(srv, p) for p in prompts], SamplingParams(max_tokens=5))
    r = client.completions.create(model=MODEL, prompt=prompts, max_tokens=5, temperature=0)
    assert [c.text for c in r.choices] == [want[0, 0][0], want[1, 0][0]]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_cuts_the_text(srv, client, stream):
    prompt = "tell me"
    full = oracle([ids_of(srv, prompt)], SamplingParams(max_tokens=30))[0, 0][0]
    stop = full[6:9]
    assert len(stop) == 3 and full.find(stop) > 0
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=30, temperature=0,
                                  stop=[stop, "QQQ"], stream=stream)
    if stream:
        chunks = list(r)
        text = "".join(ch.choices[0].text for ch in chunks)
        last = chunks[-1].choices[0]
    else:
        text, last = r.choices[0].text, r.choices[0]
    assert text == full[:full.find(stop)]
    assert last.finish_reason == "stop" and last.model_extra["finish_detail"] == "stop_string"


def _engine_choices(srv, ids, k, max_tokens):
    e = tiny()
    rid = e.add_request(ids, SamplingParams(max_tokens=max_tokens, logprobs=k))
    got = []
    while e.has_unfinished():
        got += [c for o in e.step().outputs if o.request_id == rid for c in o.choices or []]
    return got


def test_completion_logprobs_are_the_samplers(srv, client):
    prompt = "hello"
    want = _engine_choices(srv, ids_of(srv, prompt), 3, 6)
    tok = srv.state.tokenizer
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert lp.tokens == [tok.decode([c.token_id]) for c in want]
    assert lp.token_logprobs == pytest.approx([c.logprob(0) for c in want], abs=1e-4)
    assert lp.top_logprobs == [{tok.decode([t]): pytest.approx(v, abs=1e-4) for t, v in c.top(0, 3)}
                               for c in want]
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_with_speculation_are_those_without(srv, stream):
    """A server whose engine speculates (self-speculation from the first layer): the tokens and
    log-probabilities are those of the engine without speculation, token for token."""
    prompt = "hello hello hello"
    want = _engine_choices(srv, ids_of(srv, prompt), 3, 12)
    e = tiny(speculate="draft:layers=1:3")
    s = server(e)
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        r = c.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0,
                                 logprobs=3, stream=stream)
        chunks = list(r) if stream else [r]
    finally:
        s.stop()
    assert e.spec_planner.stats.rows > 0, "the server's engine verified nothing"
    tok = srv.state.tokenizer
    tokens = [t for ch in chunks if ch.choices[0].logprobs for t in ch.choices[0].logprobs.tokens]
    lps = [v for ch in chunks if ch.choices[0].logprobs for v in ch.choices[0].logprobs.token_logprobs]
    tops = [d for ch in chunks if ch.choices[0].logprobs for d in ch.choices[0].logprobs.top_logprobs]
    assert tokens == [tok.decode([c.token_id]) for c in want]
    assert lps == pytest.approx([c.logprob(0) for c in want], abs=1e-4)
    assert tops == [{tok.decode([t]): pytest.approx(v, abs=1e-4) for t, v in c.top(0, 3)}
                    for c in want]


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs_are_the_samplers(srv, client, stream):
    messages = [{"role": "user", "content": "hey"}]
    want = _engine_choices(srv, chat_ids(srv, messages), 2, 5)
    tok = srv.state.tokenizer
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=2, stream=stream)
    content = ([c for ch in r for c in (ch.choices[0].logprobs.content if ch.choices[0].logprobs else [])]
               if stream else r.choices[0].logprobs.content)
    assert [c.token for c in content] == [tok.decode([c.token_id]) for c in want]
    assert [c.bytes for c in content] == [list(tok.id_to_bytes(c.token_id)) for c in want]
    assert [c.logprob for c in content] == pytest.approx([c.logprob(0) for c in want], abs=1e-4)
    assert [[(t.token, t.logprob) for t in c.top_logprobs] for c in content] == [
        [(tok.decode([t]), pytest.approx(v, abs=1e-4)) for t, v in c.top(0, 2)] for c in want]


def test_eos_ends_with_stop(client):
    """A model that can end: greedy answers that stop at EOS say `stop` / end_of_sequence."""
    s = server(tiny(can_end=True))
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        prompt = "a"
        want = oracle([s.state.tokenizer.encode_ordinary(prompt)], SamplingParams(max_tokens=200),
                      can_end=True)[0, 0]
        r = c.completions.create(model=MODEL, prompt=prompt, max_tokens=200, temperature=0)
        assert r.choices[0].text == want[0]
        ended = len(want[1]) < 200
        assert r.choices[0].finish_reason == ("stop" if ended else "length")
        assert r.choices[0].model_extra["finish_detail"] == ("end_of_sequence" if ended else "max_tokens")
    finally:
        s.stop()


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_spliced_text_chunk_is_the_rendered_chunk(kind):
    """The per-token fast path (bytes made once per request) gives exactly the chunk the general
    renderer gives, for text that needs JSON escapes."""
    from llm_playground.model.engine.reports import RequestOutput
    from llm_playground.server.responses import Choices
    c = Choices(kind, "cmpl-x", ["r-0"], 2, 'tiny "model"', None, 3, None)
    c.chunk_events([RequestOutput("r-0", [1], "a", False, sample_index=1)])     # the role chunk
    out = RequestOutput("r-0", [2], 'é"\\\n\u2028', False, sample_index=1)
    fast = c.chunk_events([out])
    slow = c._event(c._choice_chunk(1, c.choices[1], out, []))
    assert fast == slow
    import json
    doc = json.loads(fast[len(b"data: "):])
    text = doc["choices"][0]["delta"]["content"] if kind == "chat" else doc["choices"][0]["text"]
    assert text == out.text_delta and doc["choices"][0]["index"] == 1
