"""Run the UI's own torch work (attention masks, pooling a map to the screen, scaling weights) on
a short-lived thread of its own, never on the UI thread nor on a Textual worker thread.

Why (measured on 2 cores, torch's OpenMP runtime is libgomp): every thread that runs a parallel
torch op becomes the master of an OpenMP thread pool, and the pool lives as long as its thread.
Once the process holds more OpenMP threads than cores, libgomp stops spin-waiting between
parallel regions and puts its threads to sleep instead, so every region of the engine's forward
pass pays a futex wake-up: one 2,048-token mask drawn on the UI thread at start-up made every
decode step of the engine thread twice as slow (about 55 ms instead of 27 ms) for the rest of the
session. Textual's thread workers run on a pool of reused executor threads, so they would keep
such a pool alive too. A thread started here exits when its work is done, and its OpenMP pool
goes with it; while it runs (a fraction of a second) the engine is slowed, not after.

`run_off_ui(fn, *args, deliver=callback)` runs `fn(*args)` on a new daemon thread and hands the
result (or the exception) to `deliver` on the UI thread, through the app's thread-safe
`call_from_thread`. Nothing else lives here.
"""
from __future__ import annotations

import threading
from typing import Any, Callable


def run_off_ui(app: Any, fn: Callable[..., Any], *args: Any,
               deliver: Callable[[Any, BaseException | None], None],
               name: str = "ui-torch") -> threading.Thread:
    """Start `fn(*args)` on a new thread; `deliver(result, error)` runs on the UI thread after."""
    def target() -> None:
        try:
            result, error = fn(*args), None
        except Exception as exc:          # delivered to the UI, which says so
            result, error = None, exc
        try:
            app.call_from_thread(deliver, result, error)
        except RuntimeError:              # the app is shutting down: nobody to tell
            pass

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
