"""`playground serve --data-parallel N` (server/dp_bridge.py): replicas in processes behind the
prefix-aware router. Oracles: the single-engine server on the same tiny model (greedy and seeded
answers equal, completions and chat, streaming or not, n > 1, lists of prompts), the router's
own counters on /metrics (requests sharing a long prefix all land on one replica, and its
prefix cache serves them), and the in-process engine's greedy text for requests whose replica
was killed mid-stream (they finish with exactly that text: nothing repeated, nothing lost). All
replicas dead: 503 for the request in flight, for new ones and for /health."""
from __future__ import annotations

import json
import threading
import time

import httpx2
import openai
import pytest
from server_helpers import MODEL, dp_server, oracle, parse_prometheus, server, tiny, value, wait_idle

from llm_playground.model.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def dp():
    s = dp_server(2)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def single():
    s = server(tiny())
    yield s
    s.stop()


def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)


def answers(srv) -> list:
    c = client(srv)
    chat = [{"role": "user", "content": "hi there"}]
    out = [c.completions.create(model=MODEL, prompt="hello there", max_tokens=12, temperature=0).choices[0].text,
           "".join(ch.choices[0].text for ch in c.completions.create(
               model=MODEL, prompt="the weather is", max_tokens=12, temperature=0, stream=True)),
           [ch.text for ch in c.completions.create(model=MODEL, prompt=["one two", "three four five"],
                                                   max_tokens=6, n=2, temperature=0.9, seed=5).choices],
           c.chat.completions.create(model=MODEL, messages=chat, max_tokens=10, temperature=0).choices[0].message.content,
           "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
               model=MODEL, messages=chat, max_tokens=10, temperature=0, stream=True))]
    return out


def test_answers_equal_the_single_engine_server(dp, single):
    want = answers(single)
    assert answers(dp) == want
    assert want[0] and want[3]


def metrics(srv) -> dict:
    return parse_prometheus(httpx2.get(srv.url + "/metrics").text)


def routed(fams) -> list[float]:
    return [value(fams, "playground_router_requests_total", f'replica="{i}"') for i in range(2)]


def test_shared_prefix_requests_land_on_one_replica(dp):
    c = client(dp)
    before = metrics(dp)
    prefix = "shared system prompt: answer briefly and kindly. "
    prompts = [prefix + q for q in ["why", "how so", "when", "where to", "who", "what now"]]
    for p in prompts:
        c.completions.create(model=MODEL, prompt=p, max_tokens=3, temperature=0)
    ids = [dp.state.tokenizer.encode_ordinary(p) for p in prompts]
    common = next(k for k in range(len(ids[0])) if len({tuple(x[:k + 1]) for x in ids}) > 1)
    blocks = common // 4                               # whole blocks of 4 tokens all share
    after = wait_idle(dp.url)
    delta = [a - b for a, b in zip(routed(after), routed(before))]
    assert sorted(delta) == [0, 6], delta
    home = delta.index(6)
    hits = [value(f, "playground_prefix_cache_hit_tokens_total", f'replica="{home}"') for f in (before, after)]
    assert blocks >= 8 and hits[1] - hits[0] >= 5 * 4 * blocks   # the later five reused them
    # the whole-server sample is the replicas' sum; the router's hit rate is its own ratio
    assert value(after, "playground_prefix_cache_hit_tokens_total") == sum(
        value(after, "playground_prefix_cache_hit_tokens_total", f'replica="{i}"') for i in range(2))
    assert value(after, "playground_router_prefix_hit_rate") == pytest.approx(
        value(after, "playground_router_prefix_matched_tokens_total")
        / value(after, "playground_router_prompt_tokens_total"))
    assert httpx2.get(dp.url + "/health").json()["replicas_alive"] == 2


def test_inspector_stream_per_replica(dp):
    def model_event(replica):
        with httpx2.stream("GET", dp.url + f"/inspect/reports?replica={replica}", timeout=10) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    return json.loads(line[6:])
    assert (model_event(1)["replica"], model_event(1)["replicas"]) == (1, 2)
    r = httpx2.get(dp.url + "/inspect/reports?replica=2")
    assert r.status_code == 400 and "0..1" in r.json()["error"]["message"]


PROMPTS = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota", "kappa lambda"]
N = [1, 2, 1, 1]                                     # samples per request


def test_killed_replica_requests_finish_and_all_dead_is_503():
    tok = tiny().tokenizer
    want = oracle([tok.encode_ordinary(p) for p in PROMPTS], SamplingParams(max_tokens=40))
    srv = dp_server(2, real_s=0.004)
    try:
        c = client(srv)
        got: dict = {}
        chunks = [0] * len(PROMPTS)

        def run(i):                                  # request 1 has two (greedy: equal) samples
            texts, usage = ["", ""][:N[i]], None
            for ch in c.completions.create(model=MODEL, prompt=PROMPTS[i], max_tokens=40, temperature=0,
                                           n=N[i], stream=True, stream_options={"include_usage": True}):
                for choice in ch.choices:
                    texts[choice.index] += choice.text
                    chunks[i] += 1
                usage = ch.usage or usage
            got[i] = (texts, usage.completion_tokens)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while min(chunks) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        bridge = srv.state.bridge
        assert [r.in_flight for r in bridge.replicas] == [2, 2]   # the router spread them
        at_kill = list(chunks)
        victim = next(p.replica for p in bridge._parts.values() if len(p.samples) == 2)
        bridge.replicas[victim]._proc.kill()            # the one running the two-sample request
        for t in threads:
            t.join(60)
        assert all(at_kill[i] < 40 * N[i] for i in range(len(N)))   # killed mid-stream
        assert got == {i: ([want[i, 0][0]] * N[i], 40 * N[i]) for i in range(len(PROMPTS))}
        fams = wait_idle(srv.url)
        # its two samples re-sent one by one (each with its own streamed tokens), and one more
        assert value(fams, "playground_router_resent_total") == 3
        assert value(fams, "playground_replica_up", f'replica="{victim}"') == 0
        assert httpx2.get(srv.url + "/health").json()["status"] == "degraded"
        assert c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=40,
                                    temperature=0).choices[0].text == want[0, 0][0]
        # the last replica dies under a request: 503, and so are new requests and /health
        late = {}
        t = threading.Thread(target=lambda: late.update(r=httpx2.post(srv.url + "/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": PROMPTS[1], "max_tokens": 40, "temperature": 0})))
        t.start()
        deadline = time.monotonic() + 30
        while bridge.replicas[1 - victim].in_flight == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        bridge.replicas[1 - victim]._proc.kill()
        t.join(60)
        for r in (late["r"], httpx2.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": "a"})):
            assert r.status_code == 503, r.text
            assert "data-parallel replicas are down" in r.json()["error"]["message"]
        assert httpx2.get(srv.url + "/health").status_code == 503
        assert httpx2.get(srv.url + "/metrics").status_code == 200      # the server stays up
    finally:
        srv.stop()


def cache_of(engine):
    return engine.cache_report()


def pool(cache) -> list:
    return [(b.block_id, b.state, b.ref_count, b.owners) for b in cache.blocks]


def test_attached_inspector_switches_replica(dp):
    import asyncio

    from llm_playground.playground.attach_app import AttachedApp
    from llm_playground.playground.kv_view import KVView
    client(dp).completions.create(model=MODEL, prompt="one replica caches this prompt", max_tokens=4)
    wait_idle(dp.url)
    time.sleep(0.3)                                  # the idle replicas' last pictures come through
    bridge = dp.state.bridge
    want = [asyncio.run_coroutine_threadsafe(bridge.call(cache_of, i), bridge._loop).result(30)
            for i in range(2)]
    assert pool(want[0]) != pool(want[1])            # earlier tests left different pools
    app = AttachedApp(dp.url)

    async def run():
        async with app.run_test(size=(140, 40)) as pilot:
            kv = app.query_one(KVView)

            async def shows(i):
                deadline = time.monotonic() + 30
                while not (kv.cache is not None and pool(kv.cache) == pool(want[i])
                           and f"replica {i + 1}/2" in app.sub_title):
                    assert time.monotonic() < deadline, (i, app.sub_title)
                    await pilot.pause(0.05)
            await shows(0)
            await pilot.press("f6")
            await shows(1)
            await pilot.press("f6")
            await shows(0)
            assert any(c.title == "Next replica" for c in app.get_system_commands(app.screen))
    asyncio.run(run())
