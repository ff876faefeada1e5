"""Server metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

`prometheus_client` is not a dependency; the format is small: per family a `# HELP` and a
`# TYPE` line, then its samples; a histogram has cumulative `_bucket{le="..."}` samples ending
with `le="+Inf"` (equal to `_count`), then `_sum` and `_count`. Every metric is named
`playground_...`. The engine thread writes (after each step, server/bridge.py), the event loop
reads (`GET /metrics`), under one lock. What is measured where:

- From each StepReport: running / waiting requests, KV blocks per state (free, cached, used,
  shared) and in all, prefix-cache hit and query tokens (cumulative, and their ratio),
  preemptions (cumulative), engine steps, generated tokens per second over the last
  TOKENS_WINDOW_S seconds.
- From the bridge, per request: time to first token (from the moment the server queued the
  request to the step that produced its first token), inter-token latency (per token: the gap
  between a sample's outputs divided by the tokens in the output), prompt and generated token
  counts, finished samples by the engine's precise finish reason.
- From the routes: HTTP responses by status code.
This module does not serve HTTP (server/routes.py does).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0)           # vLLM's, to 80 s (CPU queues)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
               1.0, 2.5, 5.0)
TOKENS_WINDOW_S = 10.0
STATES = ("free", "cached", "used", "shared")


class Histogram:
    """Counts per upper bound (not cumulative until rendered), sum and count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)        # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        """Count `value` `times` times."""
        i = next((j for j, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[i] += times
        self.sum += value * times
        self.count += times

    def lines(self, name: str, label: str = "") -> list[str]:
        """The exposition lines: cumulative buckets up to +Inf, then _sum and _count."""
        return [_sample(n, _join(label, lab), v) for n, lab, v in self.samples(name)]

    def samples(self, name: str) -> list[tuple[str, str, object]]:
        """(sample name, labels, value): cumulative buckets up to +Inf, then _sum and _count."""
        out, acc = [], 0
        for b, c in zip(self.bounds + (math.inf,), self.counts):
            acc += c
            out.append((f"{name}_bucket", f'le="{_le(b)}"', acc))
        return out + [(f"{name}_sum", "", _num(self.sum)), (f"{name}_count", "", self.count)]


class Metrics:
    """Every server metric; `render()` is the /metrics body."""

    def __init__(self, clock=time.perf_counter) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.running = self.waiting = 0
        self.blocks = dict.fromkeys(STATES, 0)
        self.num_blocks = 0
        self.prefix_hits = self.prefix_queries = 0
        self.preemptions = 0
        self.steps = 0
        self.prompt_tokens = self.generation_tokens = 0
        self.finished: dict[str, int] = {}
        self.http: dict[int, int] = {}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self._window: deque[tuple[float, int]] = deque()  # (time, tokens generated in a step)

    # ---- writers (engine thread, routes) --------------------------------------------------
    def request_added(self, prompt_tokens: int) -> None:
        """A request was queued on the engine with this many prompt tokens."""
        with self._lock:
            self.prompt_tokens += prompt_tokens

    def request_finished(self, reason) -> None:
        """A sample finished, for this engine FinishReason."""
        key = str(reason) if reason is not None else "unknown"
        with self._lock:
            self.finished[key] = self.finished.get(key, 0) + 1

    def observe_ttft(self, seconds: float) -> None:
        """A request's time to first token, in seconds."""
        with self._lock:
            self.ttft.observe(seconds)

    def observe_itl(self, seconds: float, tokens: int = 1) -> None:
        """`tokens` tokens each `seconds` after the sample's previous one."""
        with self._lock:
            self.itl.observe(seconds, tokens)

    def observe_cache(self, cache, running: int, waiting: int) -> None:
        """The pool and queue lengths without a step (start-up, the idle engine)."""
        with self._lock:
            self._cache(cache, running, waiting)

    def observe_step(self, report, now: float) -> None:
        """One engine step: generated tokens, the pool, the queues, the rate window."""
        tokens = sum(len(o.new_token_ids) for o in report.outputs)
        with self._lock:
            self.steps += 1
            self.generation_tokens += tokens
            self._cache(report.cache, report.num_running, report.num_waiting)
            self._window.append((now, tokens))
            while self._window and self._window[0][0] < now - TOKENS_WINDOW_S:
                self._window.popleft()

    def engine_gone(self) -> None:
        """The engine's process died: its queues and pool read zero (counters keep their totals)."""
        with self._lock:
            self.running = self.waiting = self.num_blocks = 0
            self.blocks = dict.fromkeys(STATES, 0)
            self._window.clear()

    def http_response(self, status: int) -> None:
        """One HTTP response with this status."""
        with self._lock:
            self.http[status] = self.http.get(status, 0) + 1

    def _cache(self, cache, running: int, waiting: int) -> None:
        self.running, self.waiting = running, waiting
        self.blocks = {"free": cache.num_free, "cached": cache.num_cached, "used": cache.num_used,
                       "shared": cache.num_shared}
        self.num_blocks = cache.num_blocks
        self.prefix_hits, self.prefix_queries = cache.prefix_hits, cache.prefix_queries
        self.preemptions = cache.preemptions

    # ---- the reader -----------------------------------------------------------------------
    def tokens_per_second(self) -> float:
        """Generated tokens per second over the last TOKENS_WINDOW_S (0 when idle that long)."""
        now = self._clock()
        recent = [(t, k) for t, k in self._window if t >= now - TOKENS_WINDOW_S]
        if not recent:
            return 0.0
        # the span the window's tokens came in; at least a second, so one step is no spike
        return sum(k for _, k in recent) / max(now - recent[0][0], 1.0)

    def render(self) -> str:
        """The exposition text (ends with a newline)."""
        with self._lock:
            return render_families(self.families())

    def families(self, label: str = "") -> list[tuple[str, str, str, list[str]]]:
        """(name, type, help, sample lines) per family, in exposition order; `label` (e.g.
        'replica="0"') is put first in every sample's labels. The caller holds no lock: read
        under `self._lock` (render) or from a merged copy."""
        p = "playground_"
        out: list[tuple[str, str, str, list[str]]] = []

        def family(name: str, kind: str, help_: str, samples: list[tuple[str, str, object]]) -> None:
            out.append((name, kind, help_, [_sample(n, _join(label, lab), v) for n, lab, v in samples]))

        def one(name: str, kind: str, help_: str, v) -> None:
            family(p + name, kind, help_, [(p + name, "", v)])

        one("requests_running", "gauge", "Sequences running in the engine.", self.running)
        one("requests_waiting", "gauge", "Sequences waiting for the engine (queued or preempted).", self.waiting)
        family(p + "kv_blocks", "gauge", "KV cache blocks per state.",
               [(p + "kv_blocks", f'state="{s}"', self.blocks[s]) for s in STATES])
        one("kv_blocks_total", "gauge", "KV cache blocks in the pool.", self.num_blocks)
        used = self.blocks["used"] + self.blocks["shared"]
        one("kv_usage_ratio", "gauge", "Share of the KV blocks owned by a sequence.",
            _num(used / self.num_blocks if self.num_blocks else 0.0))
        one("prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from the prefix cache.",
            self.prefix_hits)
        one("prefix_cache_query_tokens_total", "counter", "Prompt tokens looked up in the prefix cache.",
            self.prefix_queries)
        rate = self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0
        one("prefix_cache_hit_rate", "gauge", "Prefix-cache hit tokens over query tokens since the start.",
            _num(rate))
        one("preemptions_total", "counter", "Sequences preempted to free KV blocks.", self.preemptions)
        one("engine_steps_total", "counter", "Engine steps run.", self.steps)
        one("prompt_tokens_total", "counter", "Prompt tokens of the requests queued.", self.prompt_tokens)
        one("generation_tokens_total", "counter", "Tokens generated.", self.generation_tokens)
        one("generation_tokens_per_second", "gauge",
            f"Tokens generated per second over the last {TOKENS_WINDOW_S:g} s.", _num(self.tokens_per_second()))
        family(p + "request_finished_total", "counter", "Samples finished, by the engine's finish reason.",
               [(p + "request_finished_total", f'finish_reason="{r}"', c) for r, c in sorted(self.finished.items())])
        family(p + "http_responses_total", "counter", "HTTP responses by status code.",
               [(p + "http_responses_total", f'code="{c}"', n) for c, n in sorted(self.http.items())])
        for name, hist, help_ in (
                ("time_to_first_token_seconds", self.ttft,
                 "From the server queueing a request to its first generated token."),
                ("inter_token_latency_seconds", self.itl, "Time between a sample's consecutive tokens.")):
            family(p + name, "histogram", help_, hist.samples(p + name))
        return out

    def merge(self, other: "Metrics") -> None:
        """Add `other`'s figures to these (a whole-server total of several engines' metrics;
        gauges add too: running requests, blocks per state)."""
        with other._lock:
            self.running += other.running
            self.waiting += other.waiting
            for s in STATES:
                self.blocks[s] += other.blocks[s]
            self.num_blocks += other.num_blocks
            self.prefix_hits += other.prefix_hits
            self.prefix_queries += other.prefix_queries
            self.preemptions += other.preemptions
            self.steps += other.steps
            self.prompt_tokens += other.prompt_tokens
            self.generation_tokens += other.generation_tokens
            for k, v in other.finished.items():
                self.finished[k] = self.finished.get(k, 0) + v
            for k, v in other.http.items():
                self.http[k] = self.http.get(k, 0) + v
            for mine, theirs in ((self.ttft, other.ttft), (self.itl, other.itl)):
                mine.counts = [a + b for a, b in zip(mine.counts, theirs.counts)]
                mine.sum += theirs.sum
                mine.count += theirs.count
            self._window = deque(sorted([*self._window, *other._window]))


def render_families(families: list[tuple[str, str, str, list[str]]]) -> str:
    """The exposition text of `families` (Metrics.families' tuples; ends with a newline)."""
    out: list[str] = []
    for name, kind, help_, samples in families:
        out.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples])
    return "\n".join(out) + "\n"


def _join(*labels: str) -> str:
    return ",".join(lab for lab in labels if lab)


def _sample(name: str, labels: str, value) -> str:
    return f"{name}{{{labels}}} {value}" if labels else f"{name} {value}"


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _num(v: float) -> str:
    return repr(float(v))
