"""Helpers for the UI tests: an app wired to the real engine on the tiny model, and a wait loop."""
from __future__ import annotations

import asyncio

from dataclasses import replace

from tiny_engine import MODEL_NAME, tiny_engine, tiny_factory

from llm_playground.model.engine.engine import Engine
from llm_playground.playground.app import PlaygroundApp
from llm_playground.playground.engine_factory import describe


def make_app(engine: Engine | None = None, references=()) -> PlaygroundApp:
    """PlaygroundApp on `engine` (default: tiny_engine(), 128 blocks of 4 tokens), through the
    app's EngineFactory seam; no cursor blink, so screens are stable."""
    engine = engine or tiny_engine()
    return PlaygroundApp(tiny_factory(engine), model_label=MODEL_NAME, references=references,
                         cursor_blink=False)


async def wait_for(pilot, condition, timeout: float = 60.0, step: float = 0.02) -> None:
    """Let the app run until condition() is true; fail with a clear message after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        await pilot.pause(step)


def default_looking_factory(engine: Engine):
    """An EngineFactory for `engine` that describes it with the default model's name, dtypes and
    pool (1,456 blocks of 16 tokens, 2 x 30 layers x 3 KV heads x 64 dim x 2 B each): the
    header's longest real line, for layout tests. Only the description differs."""
    def factory(progress):
        info = describe(engine, engine.loaded)
        return replace(info, name="SmolLM2-135M-Instruct (Q4_1 GGUF)", dtype="int8 weights, bfloat16 KV",
                       num_blocks=1456, block_size=16, bytes_per_block=2 * 30 * 3 * 64 * 2 * 16), engine
    return factory


def attention_drawn(app) -> bool:
    """The Attention tab's mask (its title and density) and both maps are on screen: they are
    computed off the UI thread, so a test waits for this before reading or shooting them."""
    from llm_playground.playground.attention_view import AttentionView
    from llm_playground.playground.mask_grid import HeatGrid
    title = str(app.query_one(AttentionView).query_one("#attn-mask-title").render())
    return "computing" not in title and "density" in title and all(g.drawn for g in app.query(HeatGrid))
