"""Loading the model without blocking quit: the engine factory on a daemon thread, its progress.

The engine worker (playground/engine_worker.py) calls `run_factory` first thing on its thread.
The factory (playground/engine_factory.py in the app, a tiny engine in the tests) may fetch a
model, read gigabytes of weights and allocate the KV cache; it runs on a daemon thread of its
own while the worker waits, polling its cancellation every `poll_s`, so quitting during a slow
fetch or load returns at once instead of waiting for the load to end. `progress_message` turns
the loader's progress calls, in whatever shape they come, into the `LoadProgress` message that
the loading bar shows.
It does not build the engine, post messages (the worker posts what these return) or decide what
the user is told about a failed load (playground/error_hints.py).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from llm_playground.playground.messages import LoadProgress


def run_factory(factory: Callable[[Callable[..., None]], Any], progress: Callable[..., None],
                cancelled: Callable[[], bool],
                poll_s: float) -> tuple[Any, Exception | None] | None:
    """Run `factory(progress)` on a daemon thread and wait for it, checking `cancelled()` every
    `poll_s` seconds: None when cancelled first, else (its result, None) or (None, its error)."""
    box: dict[str, Any] = {}

    def target() -> None:
        """Run the factory, keeping its result or its error in `box`."""
        try:
            box["value"] = factory(progress)
        except Exception as error:  # a bad path or file must not kill the app
            box["error"] = error

    thread = threading.Thread(target=target, name="engine-load", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
        if cancelled():
            return None
    if "error" in box:
        return None, box["error"]
    return box["value"], None


def progress_message(*args: Any, **kwargs: Any) -> LoadProgress:
    """The LoadProgress for one loader progress call in any reasonable shape: (stage),
    (done, total), (stage, done, total), (fraction) or keywords of the same names."""
    stage = kwargs.get("stage") or next((a for a in args if isinstance(a, str)), "loading")
    nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    done = kwargs.get("done", nums[0] if nums else None)
    total = kwargs.get("total", nums[1] if len(nums) > 1 else None)
    fraction = None
    if done is not None and total:
        fraction = max(0.0, min(1.0, float(done) / float(total)))
    elif done is not None and isinstance(done, float) and 0.0 <= done <= 1.0:
        fraction = done
    return LoadProgress(str(stage), fraction)
