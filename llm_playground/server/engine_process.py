"""The engine in a process of its own: `ProcessBridge`, the EngineBridge for `--engine-process`.

With the engine on a thread of the HTTP process (server/bridge.py), the event loop's per-token
work (JSON, h11 writes) and the engine's host-side Python take turns on one GIL; where the host
side sets the pace (a small model on a GPU) that costs throughput. Here the engine runs in a
child process (multiprocessing "spawn": safe with CUDA and torch's threads) that only steps it:

- The child builds the engine with the picklable `factory` it is given (the model loads there),
  answers ("ready", description), then loops: commands from the pipe (add, abort, call, stop),
  `step()` while there is work, and one ("step", report, full) message per step. The report is
  the engine's own StepReport, its per-block picture and sequence list left out except at most
  once per `report_interval_s` (`full`), and once more when the engine goes idle, so the pipe
  carries O(outputs) per step, not O(blocks).
- In the HTTP process a reader thread receives those messages and does exactly what the
  in-process bridge does after a step (EngineBridge._handle: route outputs to their streams with
  one call_soon_threadsafe, time them, metrics, the inspector's snapshot).
- `submit` / `close(abort=True)` send the same commands over the pipe; `call(fn)` pickles `fn`
  (module-level functions only) and runs it in the child.
The engine's behaviour is the same as in process: the same Engine, the same calls, one thread.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import multiprocessing as mp
import threading
import time
from typing import Any, Callable

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.reports import RequestOutput
from llm_playground.server.bridge import EngineBridge, RequestStream, Snapshot

log = logging.getLogger("llm_playground.server")
START_TIMEOUT_S = 600.0          # a model fetched and loaded in the child


def describe_for_parent(engine) -> dict:
    """What the HTTP side needs of an engine it does not hold (plain, picklable data)."""
    from llm_playground.server.app import describe_engine
    return {"name": engine.loaded.name, "tokenizer": engine.tokenizer,
            "chat_template": engine.loaded.chat_template, "max_model_len": engine.max_model_len,
            "vocab_size": engine.model_config.vocab_size, "num_blocks": engine.bm.num_blocks,
            "block_size": engine.bm.block_size, "info": describe_engine(engine, engine.loaded.name),
            "cache": engine.cache_report()}


def _child(factory: Callable[[], Any], conn, interval: float) -> None:
    """The engine process: build, then serve commands and step until told to stop."""
    try:
        engine = factory()
        conn.send(("ready", describe_for_parent(engine)))
    except BaseException as e:                 # the parent reports it (one line)
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    last_full, stale = 0.0, False
    while True:
        busy = engine.has_unfinished()
        if not busy and stale:                 # the idle engine's last picture
            cache = engine.cache_report()
            conn.send(("snap", cache))
            stale = False
        try:
            if busy:
                ready = conn.poll(0)
            else:
                ready = conn.poll(1.0)
            while ready:
                cmd = conn.recv()
                if cmd[0] == "stop":
                    return
                _command(engine, conn, cmd)
                ready = conn.poll(0)
        except (EOFError, OSError):            # the parent went away
            return
        if not engine.has_unfinished():
            continue
        try:
            report = engine.step()
        except Exception as e:
            conn.send(("step_failed", f"{type(e).__name__}: {e}"))
            continue
        now = time.monotonic()
        full = now - last_full >= interval
        if full:
            last_full = now
        else:
            report = dataclasses.replace(report, sequences=[],
                                         cache=dataclasses.replace(report.cache, blocks=[]))
        stale = not full
        conn.send(("step", report, full))


def _command(engine, conn, cmd: tuple) -> None:
    kind = cmd[0]
    if kind == "add":
        _, rid, ids, params = cmd
        try:
            engine.add_request(ids, params, request_id=rid)
        except Exception as e:
            conn.send(("add_failed", rid, str(e)))
    elif kind == "abort":
        engine.abort(cmd[1])
    elif kind == "call":
        _, key, fn = cmd
        try:
            conn.send(("called", key, fn(engine), None))
        except Exception as e:
            conn.send(("called", key, None, e))


class ProcessBridge(EngineBridge):
    """EngineBridge whose engine lives in a child process (see the module docstring)."""

    def __init__(self, factory: Callable[[], Any], metrics=None, max_queue: int = 1024,
                 report_interval_s: float = 0.1, clock=time.perf_counter) -> None:
        super().__init__(None, metrics, max_queue, clock)
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(factory, child, report_interval_s),
                                 name="engine", daemon=True)
        self._send_lock = threading.Lock()
        self._calls: dict[int, asyncio.Future] = {}
        self._keys = itertools.count()
        self.description: dict | None = None

    def launch(self, timeout: float = START_TIMEOUT_S) -> dict:
        """Start the child and wait for its engine; returns describe_for_parent's dict."""
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the child (its model loads there); `wait_ready` waits for it. Several bridges
        spawned first and waited for after load their models at the same time."""
        self._proc.start()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict:
        """Wait for the spawned child's engine; returns describe_for_parent's dict."""
        if not self._conn.poll(timeout):
            self._proc.kill()
            raise RuntimeError(f"the engine process did not start in {timeout:g} s")
        try:
            msg = self._conn.recv()
        except EOFError:
            self._proc.join(5)
            raise RuntimeError(f"the engine process exited while starting (status "
                               f"{self._proc.exitcode})") from None
        if msg[0] != "ready":
            self._proc.join(5)
            raise RuntimeError(f"the engine process failed: {msg[1]}")
        self.description = msg[1]
        return self.description

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the reader thread; outputs go to `loop` (default: the running loop)."""
        self._loop = loop or asyncio.get_running_loop()
        cache = self.description["cache"]
        self.latest = Snapshot(cache, [], 0, 0, 0)
        if self.metrics is not None:
            self.metrics.observe_cache(cache, 0, 0)
        self._thread = threading.Thread(target=self._read, name="engine-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the engine process (its current step finishes first) and the reader."""
        self._stopping.set()
        try:
            self._send(("stop",))
        except (OSError, ValueError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the engine process and the reader thread run."""
        return self._proc.is_alive() and self._thread is not None and self._thread.is_alive()

    def _send(self, msg: tuple) -> None:
        with self._send_lock:
            self._conn.send(msg)

    # ---- requests (event loop) ------------------------------------------------------------
    def submit(self, prompts, params, prefix: str) -> RequestStream:
        """Queue one engine request per prompt in the engine process (see EngineBridge.submit)."""
        rids, stream = self._admit(len(prompts), params, prefix, "process")
        for rid, ids in zip(rids, prompts):
            stream.remaining[rid] = params.n
            self._streams[rid] = stream
            if self.metrics is not None:
                self.metrics.request_added(len(ids))
            self._send(("add", rid, ids, params))
        return stream

    def close(self, stream: RequestStream, abort: bool) -> None:
        """The HTTP request is over: with `abort`, end its engine requests; idempotent."""
        if stream.closed:
            return
        stream.closed = True
        self.in_flight -= 1
        if abort:
            for rid in stream.request_ids:
                self._send(("abort", rid))

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run the picklable `fn(engine)` in the engine process; its result (or exception)."""
        fut = asyncio.get_running_loop().create_future()
        key = next(self._keys)
        self._calls[key] = fut
        self._send(("call", key, fn))
        return await fut

    # ---- the reader thread ----------------------------------------------------------------
    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                if not self._stopping.is_set():
                    self._gone()
                return
            kind = msg[0]
            if kind == "step":
                _, report, full = msg
                self.steps += 1
                latest = self.latest
                self._handle(report)
                if not full:                     # keep the last whole picture for the inspector
                    self.latest = Snapshot(latest.cache, latest.sequences, report.num_running,
                                           report.num_waiting, report.step)
            elif kind == "snap":
                last = self.latest
                self.latest = Snapshot(msg[1], [], 0, 0, last.step if last else 0)
                if self.metrics is not None:
                    self.metrics.observe_cache(msg[1], 0, 0)
            elif kind == "called":
                _, key, result, error = msg
                fut = self._calls.pop(key, None)
                if fut is not None:
                    from llm_playground.server.bridge import _settle
                    self._loop.call_soon_threadsafe(_settle, fut, result, error)
            elif kind == "add_failed":
                _, rid, error = msg
                stream = self._streams.pop(rid, None)
                if stream is not None:
                    self._post([(stream, [RequestOutput(rid, [], "", True, FinishReason.ERROR, error,
                                                        ErrorKind.INTERNAL, sample_index=i)
                                          for i in range(stream.n)])])
            elif kind == "step_failed":
                log.error("engine step failed: %s", msg[1])
                self._fail_streams(f"the engine failed a step: {msg[1]}")

    def _gone(self) -> None:
        """The pipe closed without a stop: the process died. Fail what it was running (a
        data-parallel replica re-sends it instead: server/dp_bridge.py)."""
        log.error("the engine process went away")
        self._fail_streams("the engine process went away")

    def _fail_streams(self, why: str) -> None:
        items = []
        for rid, stream in list(self._streams.items()):
            items.append((stream, [RequestOutput(rid, [], "", True, FinishReason.ERROR, why,
                                                 ErrorKind.INTERNAL, sample_index=i)
                                   for i in range(stream.n)]))
            try:
                self._send(("abort", rid))
            except (OSError, ValueError):
                pass
        self._streams.clear()
        if items:
            self._post(items)
