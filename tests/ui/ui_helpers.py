"""Helpers for the UI tests: an app wired to the scripted engine, and a wait loop."""
from __future__ import annotations

import asyncio

from scripted_engine import ScriptedEngine, scripted_factory

from llm_playground.playground.app import PlaygroundApp


def make_app(engine: ScriptedEngine | None = None, references=()) -> PlaygroundApp:
    engine = engine or ScriptedEngine()
    return PlaygroundApp(scripted_factory(engine), model_label="scripted-model",
                         references=references, cursor_blink=False)


async def wait_for(pilot, condition, timeout: float = 10.0, step: float = 0.02) -> None:
    """Let the app run until condition() is true; fail with a clear message after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        await pilot.pause(step)
