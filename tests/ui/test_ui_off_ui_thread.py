"""Work the UI runs on threads of its own (playground/off_ui_thread.py) must not outlive what asked
for it: a result that comes back after its widget was removed, or after the app quit, is dropped
quietly instead of querying a DOM that is gone (it used to raise NoMatches('#attn-mask') on a
"ui-torch" thread after the app had exited: an unhandled-thread-exception warning in the tests).

The jobs are held on a gate until the widget is gone, so the order is the bad one every time;
the oracle is what reached `threading.excepthook` and whether the delivery ran. The app is the
real one on the tiny engine (tests/ui/tiny_engine.py).
"""
from __future__ import annotations

import asyncio
import threading

from tiny_engine import tiny_engine
from ui_helpers import make_app, wait_for

from llm_playground.playground import attention_view, mask_grid, off_ui_thread
from llm_playground.playground.attention_view import AttentionView
from llm_playground.playground.mask_grid import HeatGrid


class Gate:
    """Wraps a function so that every call waits until `open()`; keeps the threads started."""

    def __init__(self, monkeypatch) -> None:
        self.event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.calls = 0
        mask_for = attention_view.mask_for

        def held_mask_for(*args):
            self.calls += 1
            assert self.event.wait(30), "the gate was never opened"
            return mask_for(*args)

        def recording_run_off_ui(*args, **kwargs):
            thread = off_ui_thread.run_off_ui(*args, **kwargs)
            self.threads.append(thread)
            return thread

        monkeypatch.setattr(attention_view, "mask_for", held_mask_for)
        monkeypatch.setattr(attention_view, "run_off_ui", recording_run_off_ui)
        monkeypatch.setattr(mask_grid, "run_off_ui", recording_run_off_ui)

    def open_and_join(self) -> None:
        """Let every held job finish, and wait for their threads (deliveries included). Only
        once the app has stopped: a delivery waits for the UI thread."""
        self.event.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} did not finish"

    async def open_and_wait(self, pilot) -> None:
        """The same inside the app, letting the UI thread run the deliveries meanwhile."""
        self.event.set()
        await wait_for(pilot, lambda: not any(t.is_alive() for t in self.threads), timeout=30)


def _thread_errors(monkeypatch) -> list[BaseException]:
    """Exceptions that escape any thread from now on (what pytest warns about)."""
    seen: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def test_a_mask_that_comes_back_after_its_tab_was_removed_is_dropped(monkeypatch):
    errors = _thread_errors(monkeypatch)
    gate = Gate(monkeypatch)
    taken: list[object] = []
    take = AttentionView._take_mask
    monkeypatch.setattr(AttentionView, "_take_mask",
                        lambda self, *a: (taken.append(a), take(self, *a)))
    app = make_app(tiny_engine())

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: gate.calls >= 1)        # the mount's mask is held
            view = app.query_one(AttentionView)
            await view.remove()
            await gate.open_and_wait(pilot)
            await pilot.pause(0.1)
            assert not app.query(AttentionView)

    asyncio.run(run())
    assert errors == [] and taken == []


def test_a_mask_that_comes_back_after_the_app_quit_is_dropped(monkeypatch):
    errors = _thread_errors(monkeypatch)
    gate = Gate(monkeypatch)
    app = make_app(tiny_engine())

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: gate.calls >= 1)

    asyncio.run(run())
    gate.open_and_join()
    assert errors == []


def test_a_mask_that_comes_back_while_its_tab_is_live_is_drawn(monkeypatch):
    """The check drops nothing it should not: with the tab still there, the held mask is drawn."""
    errors = _thread_errors(monkeypatch)
    gate = Gate(monkeypatch)
    app = make_app(tiny_engine())

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: gate.calls >= 1)
            view = app.query_one(AttentionView)
            title = view.query_one("#attn-mask-title")
            assert "computing" in str(title.render())
            await gate.open_and_wait(pilot)
            assert "density" in str(title.render())          # delivered and drawn
            grid = view.query_one("#attn-mask", HeatGrid)
            assert off_ui_thread.is_live(grid)
            await grid.remove()
            assert not off_ui_thread.is_live(grid)

    asyncio.run(run())
    gate.open_and_join()
    assert errors == []
