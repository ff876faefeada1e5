"""The engine bridge: the engine steps in its own thread; each HTTP request reads an asyncio queue.

The same split as vLLM's AsyncLLMEngine (a per-request stream the engine's outputs are put on)
and MLC's threaded engine (the engine loop in a background thread, results handed to the event
loop with `call_soon_threadsafe`), written for this engine:

- One thread ("engine") owns the Engine: every `add_request`, `abort`, `step` and report happens
  there, so the engine needs no locks (as in the app, playground/engine_worker.py). It takes
  commands from a thread-safe queue, blocks on it while the engine is idle, and otherwise steps.
- Each HTTP request opens a `RequestStream` (one or several engine requests: a completions call
  with several prompts) whose `asyncio.Queue` lives on the event loop. After each step the
  thread groups the step's outputs per stream and hands them over with ONE
  `loop.call_soon_threadsafe` per step (not one per token: each call wakes the loop).
- `abort(stream)` (a client that went away) queues `Engine.abort` for its requests: the engine
  finishes them (FinishReason.ABORTED) and frees their blocks at once.
- After each step the thread updates the metrics (server/metrics.py) and keeps the step's
  plain-data cache report as `latest` for the inspector stream (server/inspect_stream.py).
What it does not do: HTTP, JSON, tokenizing, or deciding whether a request is valid.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.reports import RequestOutput
from llm_playground.model.engine.sampling_params import SamplingParams

log = logging.getLogger("llm_playground.server")
IDLE_POLL_S = 0.1       # an idle engine thread checks for a stop this often


class QueueFull(Exception):
    """More requests than ServerConfig.max_queue are in the server."""


class EngineUnavailable(RuntimeError):
    """No engine is running to take the request (the thread or process died; every
    data-parallel replica is down): 503."""


@dataclass
class Snapshot:
    """The pool as the last step left it (plain data, safe to read from the event loop)."""
    cache: Any                       # model/engine/reports.CacheReport
    sequences: list                  # SequenceReports
    num_running: int
    num_waiting: int
    step: int


@dataclass(eq=False)
class RequestStream:
    """One HTTP request's engine requests and the queue their outputs arrive on (event loop)."""
    request_ids: list[str]
    n: int                                        # samples per engine request
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)   # items: list[RequestOutput]
    arrival: float = 0.0                          # perf_counter at submit (TTFT's start)
    # Engine thread only: samples still running per request id, last token time per sample.
    remaining: dict = field(default_factory=dict)
    last_token: dict = field(default_factory=dict)
    first_token: bool = False
    closed: bool = False                          # event loop: close() ran (it is idempotent)


class EngineBridge:
    """Runs `engine` on its own thread and connects it to asyncio request streams."""

    def __init__(self, engine, metrics=None, max_queue: int = 1024,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_queue = max_queue
        self.clock = clock
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, RequestStream] = {}      # engine thread: request id -> stream
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.in_flight = 0                                # event loop only: open streams
        self.latest: Snapshot | None = None               # written by the engine thread
        self.steps = 0

    # ---- lifecycle (event loop) -----------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the engine thread; outputs go to `loop` (default: the running loop)."""
        self._loop = loop or asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the engine thread (its current step finishes first)."""
        self._stopping.set()
        self._commands.put(("wake",))
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the engine thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # ---- requests (event loop) ------------------------------------------------------------
    def submit(self, prompts: list[list[int]], params: SamplingParams, prefix: str) -> RequestStream:
        """Queue one engine request per prompt (ids `prefix-0`, `prefix-1`, ...); raises
        QueueFull when max_queue requests are already in the server."""
        rids, stream = self._admit(len(prompts), params, prefix, "thread")
        for rid, ids in zip(rids, prompts):
            self._commands.put(("add", stream, rid, ids, params))
        return stream

    def _admit(self, num_prompts: int, params: SamplingParams, prefix: str, where: str
               ) -> tuple[list[str], RequestStream]:
        """The queue-limit and liveness checks of `submit` (QueueFull, RuntimeError naming the
        engine `where` runs), then the request ids and the stream, counted in flight."""
        if self.in_flight >= self.max_queue:
            raise QueueFull(f"the server holds {self.in_flight} requests (--max-queue "
                            f"{self.max_queue}); retry later")
        if not self.alive:
            raise EngineUnavailable(f"the engine {where} is not running")
        rids = [f"{prefix}-{i}" for i in range(num_prompts)]
        stream = RequestStream(rids, params.n, arrival=self.clock())
        self.in_flight += 1
        return rids, stream

    def close(self, stream: RequestStream, abort: bool) -> None:
        """The HTTP request is over: with `abort`, end its engine requests (blocks freed).
        A second call does nothing."""
        if stream.closed:
            return
        stream.closed = True
        self.in_flight -= 1
        if abort:
            for rid in stream.request_ids:
                self._commands.put(("abort", rid))

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(engine)` on the engine thread between steps; its result (or exception)."""
        fut = asyncio.get_running_loop().create_future()
        self._commands.put(("call", fn, fut))
        return await fut

    # ---- the engine thread ----------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine
        self._snapshot_idle()
        while not self._stopping.is_set():
            busy = engine.has_unfinished()
            self._drain(block=not busy)
            if self._stopping.is_set() or not engine.has_unfinished():
                continue
            try:
                report = engine.step()
            except Exception as error:          # a bug: fail the live requests, keep serving
                log.exception("engine step failed")
                self._fail_all(error)
                continue
            self.steps += 1
            self._handle(report)

    def _drain(self, block: bool) -> None:
        try:
            cmd = self._commands.get(timeout=IDLE_POLL_S) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            self._command(cmd)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return

    def _command(self, cmd: tuple) -> None:
        kind = cmd[0]
        if kind == "add":
            _, stream, rid, ids, params = cmd
            try:
                self.engine.add_request(ids, params, request_id=rid)
            except Exception as error:
                out = RequestOutput(rid, [], "", True, FinishReason.ERROR, str(error),
                                    ErrorKind.INTERNAL)
                self._post([(stream, [out])])
                return
            stream.remaining[rid] = params.n
            self._streams[rid] = stream
            if self.metrics is not None:
                self.metrics.request_added(len(ids))
        elif kind == "abort":
            self.engine.abort(cmd[1])
        elif kind == "call":
            _, fn, fut = cmd
            try:
                result, error = fn(self.engine), None
            except Exception as e:
                result, error = None, e
            self._loop.call_soon_threadsafe(_settle, fut, result, error)

    def _handle(self, report) -> None:
        """Route the step's outputs to their streams (one hand-over to the loop), time them,
        and keep the step's snapshot and metrics."""
        now = self.clock()
        batch: dict[int, tuple[RequestStream, list]] = {}
        metrics = self.metrics
        for out in report.outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            batch.setdefault(id(stream), (stream, []))[1].append(out)
            k = len(out.new_token_ids)
            if k and metrics is not None:
                key = (out.request_id, out.sample_index)
                last = stream.last_token.get(key)
                if not stream.first_token:
                    stream.first_token = True
                    metrics.observe_ttft(now - stream.arrival)
                elif last is not None:
                    metrics.observe_itl((now - last) / k, k)
                stream.last_token[key] = now
            if out.finished:
                if metrics is not None:
                    metrics.request_finished(out.finish_reason)
                left = stream.remaining.get(out.request_id, 1) - 1
                stream.remaining[out.request_id] = left
                if left <= 0:
                    self._streams.pop(out.request_id, None)
        if batch:
            self._post(list(batch.values()))
        self.latest = Snapshot(report.cache, report.sequences, report.num_running,
                               report.num_waiting, report.step)
        if metrics is not None:
            metrics.observe_step(report, now)

    def _snapshot_idle(self) -> None:
        cache = self.engine.cache_report()
        self.latest = Snapshot(cache, [], 0, 0, 0)
        if self.metrics is not None:
            self.metrics.observe_cache(cache, 0, 0)

    def _post(self, items: list[tuple[RequestStream, list]]) -> None:
        self._loop.call_soon_threadsafe(_deliver, items)

    def _fail_all(self, error: Exception) -> None:
        line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        items = []
        for rid, stream in list(self._streams.items()):
            try:
                self.engine.abort(rid)
            except Exception:
                pass
            items.append((stream, [RequestOutput(rid, [], "", True, FinishReason.ERROR,
                                                 f"the engine failed a step: {line}",
                                                 ErrorKind.INTERNAL, sample_index=i)
                                   for i in range(stream.n)]))
        self._streams.clear()
        if items:
            self._post(items)


def _deliver(items: list[tuple[RequestStream, list]]) -> None:
    """On the event loop: put each stream's outputs of one step on its queue."""
    for stream, outs in items:
        stream.queue.put_nowait(outs)


def _settle(fut: asyncio.Future, result, error) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
