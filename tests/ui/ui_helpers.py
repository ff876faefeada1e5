"""Helpers for the UI tests: an app wired to the real engine on the tiny model, and a wait loop."""
from __future__ import annotations

import asyncio

from tiny_engine import MODEL_NAME, tiny_engine, tiny_factory

from llm_playground.model.engine.engine import Engine
from llm_playground.playground.app import PlaygroundApp


def make_app(engine: Engine | None = None, references=()) -> PlaygroundApp:
    """PlaygroundApp on `engine` (default: tiny_engine(), 128 blocks of 4 tokens), through the
    app's EngineFactory seam; no cursor blink, so screens are stable."""
    engine = engine or tiny_engine()
    return PlaygroundApp(tiny_factory(engine), model_label=MODEL_NAME, references=references,
                         cursor_blink=False)


async def wait_for(pilot, condition, timeout: float = 10.0, step: float = 0.02) -> None:
    """Let the app run until condition() is true; fail with a clear message after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        await pilot.pause(step)
