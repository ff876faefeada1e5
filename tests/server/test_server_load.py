"""64 concurrent streaming clients on a small KV cache, a quarter of them leaving mid-stream.

The pool (48 blocks of 4 tokens) holds about eight of the 64 requests at once (8-token prompts,
16 new tokens each), so the scheduler must preempt, which the metrics must show. Sixteen clients
close their stream after their third chunk. Every other request must get all 16 tokens and the
text an in-process engine with a pool large enough for all of them gives (greedy: preemption and
recomputation change nothing), the pool must end with no block owned by anyone (checked through
the metrics and the block manager's own invariants on the engine's thread), and the server must
answer afterwards. Run with the engine on a thread of the server and in a process of its own."""
from __future__ import annotations

import asyncio
import random

import httpx2
import openai
import pytest
from server_helpers import MODEL, oracle, parse_prometheus, process_server, server, tiny, value, wait_idle

from llm_playground.model.engine.sampling_params import SamplingParams

CLIENTS, LEAVERS, NEW = 64, 16, 16


def check_pool(engine):
    """On the engine's thread (or process): the block manager's invariants, the pool, the load."""
    engine.bm.check_invariants()
    return engine.cache_report(), len(engine.requests), engine.has_unfinished()


@pytest.mark.parametrize("where", ["thread", "process"])
def test_64_streams_with_preemption_and_a_quarter_leaving(where):
    s = server(tiny(num_blocks=48, block_size=4)) if where == "thread" else process_server(48)
    try:
        rng = random.Random(0)
        letters = "abcdefghijklmnopqrstuvwxyz "
        prompts = ["".join(rng.choice(letters) for _ in range(8)) for _ in range(CLIENTS)]
        ids = [s.state.tokenizer.encode_ordinary(p) for p in prompts]
        want = oracle(ids, SamplingParams(max_tokens=NEW, ignore_eos=True), num_blocks=1024)
        leaving = set(rng.sample(range(CLIENTS), LEAVERS))

        async def one(client, i):
            stream = await client.completions.create(
                model=MODEL, prompt=prompts[i], max_tokens=NEW, temperature=0, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            text, usage, chunks = "", None, 0
            async for ch in stream:
                chunks += 1
                if ch.choices:
                    text += ch.choices[0].text
                usage = ch.usage or usage
                if i in leaving and chunks == 3:
                    await stream.close()
                    return i, None, None
            return i, text, usage

        async def run():
            async with openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0,
                                          timeout=120) as client:
                return await asyncio.gather(*(one(client, i) for i in range(CLIENTS)))

        results = asyncio.run(run())
        stayed = [(i, text, usage) for i, text, usage in results if i not in leaving]
        assert len(stayed) == CLIENTS - LEAVERS
        for i, text, usage in stayed:
            assert usage.completion_tokens == NEW, i
            assert text == want[i, 0][0], i
        fams = wait_idle(s.url)
        assert value(fams, "playground_preemptions_total") > 0
        finished = fams["playground_request_finished_total"]["samples"]
        assert sum(finished.values()) == CLIENTS
        aborted = value(fams, "playground_request_finished_total", 'finish_reason="aborted"')
        assert 1 <= aborted <= LEAVERS
        assert value(fams, "playground_request_finished_total", 'finish_reason="max_tokens"') == CLIENTS - aborted
        assert value(fams, "playground_kv_blocks", 'state="used"') == 0
        assert value(fams, "playground_kv_blocks", 'state="shared"') == 0
        assert (value(fams, "playground_kv_blocks", 'state="free"')
                + value(fams, "playground_kv_blocks", 'state="cached"')) == 48
        assert value(fams, "playground_time_to_first_token_seconds") == CLIENTS

        async def invariants():
            return await s.state.bridge.call(check_pool)

        # the bridge's call() runs on the engine thread, so it needs the server's event loop
        fut = asyncio.run_coroutine_threadsafe(invariants(), s.state.bridge._loop)
        cache, live, busy = fut.result(30)
        assert cache.num_used == cache.num_shared == 0 and live == 0 and not busy
        assert s.state.bridge.in_flight == 0
        r = httpx2.post(s.url + "/v1/completions", json={"model": MODEL, "prompt": "abc", "max_tokens": 3})
        assert r.status_code == 200
        assert parse_prometheus(httpx2.get(s.url + "/metrics").text)
    finally:
        s.stop()
