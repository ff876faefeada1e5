"""How often the engine worker sends the UI a new picture while it works: as often as the UI
thread can draw one within a share of the CPU.

Every picture (an answer's new text, the stats strip, the KV map) costs the UI thread message
handling, layout and rendering. That work shares the GIL and the cores with the engine thread.
Measured on 2 cores (benchmarks/ui_speed.py), the engine thread waits about as long as the UI
thread runs: 7% of the UI thread at ten pictures a second meant decode 7% slower than
`playground generate`. A fixed rate is either too slow on a fast machine or too costly on a slow
one, so the pacer measures the cost and spaces pictures to fit a budget:

- the UI thread calls `picture_shown()` as each picture arrives. The pacer notes the UI thread's
  own CPU time (`time.thread_time`) since the previous picture: everything it did in between,
  the previous picture's rendering included;
- the worker thread reads `interval()`: the smoothed cost over UI_CPU_BUDGET (the share of wall
  time the UI thread may take), kept between `min_interval_s` (ten a second, smooth streaming)
  and `max_interval_s` (four a second: slower reads as jerky).

A sample taken after a pause longer than `max_interval_s` plus a second (the engine was idle; the
UI's CPU then was the user's doing) is not counted. The two threads share only a float, which
Python reads and writes whole.

What it does not do: post, draw or decide what is urgent. A first token, a finished answer and
the idle engine's last picture go out at once (playground/engine_worker.py).
"""
from __future__ import annotations

import time
from typing import Callable

MIN_INTERVAL_S = 0.1        # ten pictures a second reads as smooth streaming
MAX_INTERVAL_S = 0.25       # four a second: slower than this a stream reads as jerky
UI_CPU_BUDGET = 0.05        # the UI thread's share of the wall time: decode within ~5% of the CLI
SMOOTHING = 0.3             # weight of the newest sample (an exponential moving average)


class FramePacer:
    """The publishing interval from the UI thread's measured cost per picture."""

    def __init__(self, min_interval_s: float = MIN_INTERVAL_S, max_interval_s: float = MAX_INTERVAL_S,
                 budget: float = UI_CPU_BUDGET, cpu_clock: Callable[[], float] = time.thread_time,
                 wall_clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {budget}")
        if not 0 <= min_interval_s <= max_interval_s:
            raise ValueError(f"need 0 <= min_interval_s <= max_interval_s, got {min_interval_s}, "
                             f"{max_interval_s}")
        self.min_interval_s, self.max_interval_s, self.budget = min_interval_s, max_interval_s, budget
        self._cpu_clock, self._wall_clock = cpu_clock, wall_clock
        self._last: tuple[float, float] | None = None     # (wall, UI thread CPU) at the last picture
        self.cost_s: float | None = None                   # smoothed UI CPU seconds per picture
        self._interval = min_interval_s

    def picture_shown(self) -> None:
        """UI thread: a picture arrived; count the UI's CPU time since the previous one."""
        wall, cpu = self._wall_clock(), self._cpu_clock()
        last, self._last = self._last, (wall, cpu)
        if last is None or wall - last[0] > self.max_interval_s + 1.0:
            return                               # the first one, or after a pause: no sample
        cost = max(0.0, cpu - last[1])
        self.cost_s = cost if self.cost_s is None else (1 - SMOOTHING) * self.cost_s + SMOOTHING * cost
        self._interval = min(self.max_interval_s, max(self.min_interval_s, self.cost_s / self.budget))

    def interval(self) -> float:
        """Worker thread: the least time between two pictures now."""
        return self._interval
