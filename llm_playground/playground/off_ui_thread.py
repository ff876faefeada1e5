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

`run_off_ui(owner, fn, *args, deliver=callback)` runs `fn(*args)` on a new daemon thread and
hands the result (or the exception) to `deliver` on the UI thread, through the app's thread-safe
`call_from_thread`, but only while `owner` (the widget that asked) is still live: the app running
and the widget mounted in it, not being removed (`is_live`). A result that comes after the app
quit or the widget went is dropped quietly; nobody is left to show it, and `deliver` would
query a DOM that is gone. Nothing else lives here.
"""
from __future__ import annotations

import threading
from typing import Any, Callable


def is_live(widget: Any) -> bool:
    """True while `widget` is mounted in a running app and not on its way out (removed, closing,
    or the app shutting down): a UI-thread callback may then query it and its children."""
    try:
        app = widget.app
    except Exception:              # no active app: never mounted, or the app has gone
        return False
    return bool(app.is_running and widget.is_attached and widget.is_running
                and not any(getattr(node, "_pruning", False) or getattr(node, "_closing", False)
                            for node in widget.ancestors_with_self))


def run_off_ui(owner: Any, fn: Callable[..., Any], *args: Any,
               deliver: Callable[[Any, BaseException | None], None],
               name: str = "ui-torch") -> threading.Thread:
    """Start `fn(*args)` on a new thread; `deliver(result, error)` runs on the UI thread after,
    if `owner` is still live then (else the result is dropped). Call from the UI thread."""
    app = owner.app

    def on_ui_thread(result: Any, error: BaseException | None) -> None:
        if is_live(owner):
            deliver(result, error)

    def target() -> None:
        try:
            result, error = fn(*args), None
        except Exception as exc:          # delivered to the UI, which says so
            result, error = None, exc
        if not app.is_running:
            return                        # the app quit while fn ran: nobody to tell
        try:
            app.call_from_thread(on_ui_thread, result, error)
        except RuntimeError:              # the app stopped between the check and the call
            pass

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
