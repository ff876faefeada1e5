"""The loading bar shows how far the model load is (a percentage), not an indeterminate bar.

Found as a newcomer (issue 22). The factory here is the real engine's (tiny model), held at a
known point of the load so the test can look at the bar: it reports the fraction the loader
would (`progress(stage, done=f, total=1.0)`, what engine_factory.real_factory passes through
from load_model's `fraction`), waits, then finishes. Oracle: the fraction the factory reported.
"""
from __future__ import annotations

import asyncio
import threading

from tiny_engine import MODEL_NAME, tiny_engine
from ui_helpers import wait_for

from llm_playground.playground.app import PlaygroundApp
from llm_playground.playground.engine_factory import describe


def test_loading_bar_shows_the_weights_percentage():
    engine = tiny_engine()
    reported, release = threading.Event(), threading.Event()

    def factory(progress):
        progress("loading the model")
        progress("loading the weights", done=0.42, total=1.0)
        reported.set()
        release.wait(10)
        progress("loading the weights", done=1.0, total=1.0)
        return describe(engine, engine.loaded), engine

    app = PlaygroundApp(factory, model_label=MODEL_NAME, references=(), cursor_blink=False)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            bar = app.query_one("#loading-bar")
            label = app.query_one("#loading-label")
            await wait_for(pilot, lambda: reported.is_set() and bar.total is not None)
            assert bar.total == 1.0 and abs(bar.percentage - 0.42) < 1e-9
            assert "loading the weights" in str(label.render())
            release.set()
            await wait_for(pilot, lambda: app.model_info is not None)
            assert not app.query_one("#loading").display

    asyncio.run(run())


def test_hidden_loading_bar_stops_animating():
    """A load whose last stage has no percentage leaves an indeterminate bar, which redraws itself
    15 times a second; once the model is ready and the bar hidden, that animation must stop (it
    took UI-thread time from the engine thread for the app's whole life)."""
    engine = tiny_engine()

    def factory(progress):
        progress("building the engine")                  # no fraction: indeterminate
        return describe(engine, engine.loaded), engine

    app = PlaygroundApp(factory, model_label=MODEL_NAME, references=(), cursor_blink=False)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            await pilot.pause()
            assert not app.query_one("#loading").display
            assert app.query_one("#loading-bar #bar").auto_refresh is None

    asyncio.run(run())
