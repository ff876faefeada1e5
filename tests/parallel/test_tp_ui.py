"""The UI under tensor parallelism: the stats strip shows the step's all-reduce time and the KV
tab shows each rank's share (heads per rank, bytes per block per rank).

Drives the real app on a real TP=2 engine (tiny random float32 model with 6 query / 3 KV heads,
so the ranks' shares differ: 4 + 2 query heads, 2 + 1 KV heads), byte tokenizer, real clock.
Oracles: rank 0's bytes per block are its runner's actual KV pool's; rank 1's are the pool
formula (kv_cache.bytes_per_block) for its one KV head; the strip's milliseconds are the
ParallelReport's. What you should see: after a 3-token answer, "all-reduce N ms/step" at the
end of the strip's second line; on the KV tab, under the formula, "tensor parallel over 2
ranks" and one line per rank. Without tensor parallelism neither appears (the other UI tests'
snapshots are unchanged). The KV tab's load test (F8) runs on the chat's TP engine and ends.
"""
from __future__ import annotations

import asyncio

import torch

from llm_playground.model.network.kv_cache import bytes_per_block
from llm_playground.model.parallel.tp_engine import start_tensor_parallel
from llm_playground.playground.app import PlaygroundApp
from llm_playground.playground.engine_factory import describe
from llm_playground.playground.stats_strip import StatsStrip

from tp_helpers import engine_config, tiny_source


async def _wait(pilot, condition, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"condition not met within {timeout} s"
        await pilot.pause(0.05)


def test_strip_and_kv_tab_show_the_ranks():
    engine = start_tensor_parallel(tiny_source(6, 3), 2, engine_config(num_blocks=64))
    app = PlaygroundApp(lambda progress: (describe(engine, engine.loaded), engine),
                        model_label="tiny", cursor_blink=False)

    async def run():
        async with app.run_test(size=(140, 40)) as pilot:
            await _wait(pilot, lambda: app.model_info is not None)
            strip = app.query_one(StatsStrip)
            app.query_one("#param-max_tokens").value = "3"
            app.query_one("#param-temperature").value = "0"
            await pilot.click("#prompt")
            await pilot.press(*"hello", "enter")
            await _wait(pilot, lambda: strip.stats is not None and strip.stats.output_tokens == 3
                        and strip.stats.comm_ms is not None)
            await pilot.pause(0.6)
            assert strip.stats.comm_ms > 0
            text = str(strip.query_one("#stats-text").render())
            assert f"all-reduce {strip.stats.comm_ms:,.1f} ms/step" in text, text
            await pilot.press("f4")
            await pilot.pause(0.3)
            shares = app.query_one("#kv-parallel")
            assert shares.display
            body = str(shares.content)
            mc = engine.loaded.config
            rank1 = bytes_per_block(mc.num_layers, 1, mc.head_dim, torch.float32, 4)
            assert "tensor parallel over 2 ranks" in body
            assert (f"rank 0: 4 query / 2 KV heads · {engine.runner.kv.bytes_per_block:,} B per block"
                    in body), body
            assert f"rank 1: 2 query / 1 KV heads · {rank1:,} B per block" in body, body
            # the load test runs on the chat's own TP engine (a second engine has no ranks)
            await pilot.press("f8")
            worker = app.engine_worker
            await _wait(pilot, lambda: worker.load_engine is not None)
            assert worker.load_engine is engine
            await _wait(pilot, lambda: not worker.load_running, timeout=120)
            assert engine.runner.dead is None

    try:
        asyncio.run(run())
    finally:
        engine.close()
