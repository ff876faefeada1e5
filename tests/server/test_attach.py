"""`playground --attach URL`: the KV inspector fed by a live server's report stream.

The app (playground/attach_app.py) runs headless against a real server on the tiny model while
a client streams requests; the oracle is the engine itself: once the server is idle, the pool
the attached view shows (every block's state, reference count and owners, and the totals) is
the engine's own cache_report(), read on the engine thread. During a long request the view
shows it running with blocks in use. A wrong key is one line, not a crash."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx2
import pytest
from server_helpers import MODEL, server, tiny, wait_idle

from llm_playground.playground.attach_app import AttachedApp
from llm_playground.playground.kv_view import KVView
from llm_playground.server.report_codec import decode_snapshot, encode_snapshot


def engine_cache(srv):
    fut = asyncio.run_coroutine_threadsafe(srv.state.bridge.call(lambda e: e.cache_report()),
                                           srv.state.bridge._loop)
    return fut.result(30)


async def wait_for(pilot, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def test_attached_view_shows_the_servers_pool():
    from tiny_engine import FakeClock
    srv = server(tiny(num_blocks=64, clock=FakeClock(real_s=0.01)), report_interval_s=0.05)
    try:
        app = AttachedApp(srv.url)

        async def run():
            async with app.run_test(size=(140, 40)) as pilot:
                kv = app.query_one(KVView)
                await wait_for(pilot, lambda: kv.cache is not None)
                assert kv.cache.num_blocks == 64
                t = threading.Thread(target=lambda: httpx2.post(srv.url + "/v1/completions", timeout=60, json={
                    "model": MODEL, "prompt": "hello there my friend", "max_tokens": 40}))
                t.start()
                await wait_for(pilot, lambda: kv._counts[0] == 1 and kv.cache.num_used > 0)
                assert any(s.status == "running" for s in kv.sequences)
                t.join(60)
                wait_idle(srv.url)
                await pilot.pause(0.3)
                want = engine_cache(srv)
                await wait_for(pilot, lambda: kv._counts == (0, 0) and kv.cache.num_used == 0)
                got = kv.cache
                assert [(b.block_id, b.state, b.ref_count, b.owners) for b in got.blocks] == \
                       [(b.block_id, b.state, b.ref_count, b.owners) for b in want.blocks]
                for name in ("num_free", "num_cached", "num_used", "num_shared", "prefix_hits",
                             "prefix_queries", "preemptions"):
                    assert getattr(got, name) == getattr(want, name), name
                stats = str(app.query_one("#server-stats").render())
                assert "finished 1" in stats
        asyncio.run(run())
    finally:
        srv.stop()


def test_wrong_key_is_one_line():
    srv = server(tiny(), api_key="k")
    try:
        app = AttachedApp(srv.url, api_key="nope")

        async def run():
            async with app.run_test() as pilot:
                await wait_for(pilot, lambda: app.sub_title == "not attached")
                assert "incorrect API key" in str(app.query_one("#server-stats").render())
        asyncio.run(run())
    finally:
        srv.stop()


def test_codec_round_trip():
    e = tiny()
    from llm_playground.model.engine.sampling_params import SamplingParams
    e.add_request([1, 2, 3, 4, 5, 6], SamplingParams(max_tokens=3, n=2))
    r = e.step()
    doc = encode_snapshot(r.cache, r.sequences, r.num_running, r.num_waiting, r.step, {"a": 1})
    import json
    cache, seqs, running, waiting, step, stats = decode_snapshot(json.loads(json.dumps(doc)))
    assert cache == r.cache and seqs == r.sequences
    assert (running, waiting, step, stats) == (r.num_running, r.num_waiting, r.step, {"a": 1})
    with pytest.raises(ValueError, match="inspector report"):
        decode_snapshot({"cache": {}})


def test_no_server_is_one_line():
    import socket
    with socket.socket() as s:                # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = AttachedApp(f"http://127.0.0.1:{port}")

    async def run():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.sub_title == "not attached")
            text = str(app.query_one("#server-stats").render())
            assert "cannot reach" in text and "\n" not in text.strip()
    asyncio.run(run())
