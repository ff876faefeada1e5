"""Data parallelism behind the server: N engine processes and one prefix-aware router.

`DataParallelBridge(factories, ...)` is the bridge of `playground serve --data-parallel N`: one
`ReplicaBridge` per factory (server/engine_process.py's ProcessBridge: the same child process,
pipe and reader thread as `--engine-process`; no second transport), and the cache-aware router
of model/parallel/router.py (the replica whose prefix tree holds the longest share of the
prompt, else the least loaded; load = the replica's open engine requests). It has the bridge
interface the routes use (`submit`, `close`, `alive`, `in_flight`), so completions and chat,
streaming or not, n > 1 and lists of prompts all go through it unchanged. Each prompt of an HTTP
request is routed on its own; an engine request with n samples stays on one replica (its
samples share the prompt's blocks).

Everything here but the replicas' reader threads runs on the event loop: a reader hands a
step's outputs (`_post`) and its replica's death (`_gone`, the pipe's end) to the loop with
`call_soon_threadsafe`, in pipe order, so every output a dead replica sent is handled before its
loss. Outputs are renamed to the caller's request id and sample index; the tokens each sample
has streamed are kept. When a replica dies its unfinished requests are re-sent to a live one:
a request nothing was streamed for goes again as it was (exact, seeded sampling too); a sample
with streamed tokens goes alone (n = 1, seed + its index) with those tokens appended to its
prompt and max_tokens reduced by their count, so nothing is streamed twice and greedy output is
the same tokens (the prefill of the longer prompt recomputes what decoding had cached). A stop
string or a multi-byte character split across the failover point is not seen as one (the new
request detokenizes from its own first token). With no replica left, requests fail with
ErrorKind.UNAVAILABLE (503) and new ones are refused (EngineUnavailable). Not done: restarting
a dead replica, moving a running request for balance.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.reports import RequestOutput
from llm_playground.model.parallel.router import POLICIES, RouterConfig
from llm_playground.server.bridge import EngineUnavailable, QueueFull, RequestStream
from llm_playground.server.engine_process import START_TIMEOUT_S, ProcessBridge
from llm_playground.server.metrics import Metrics

log = logging.getLogger("llm_playground.server")


class ReplicaBridge(ProcessBridge):
    """One replica's engine process; its outputs and its death go to the DataParallelBridge."""

    def __init__(self, index: int, owner: "DataParallelBridge", factory, metrics,
                 max_queue: int, report_interval_s: float) -> None:
        super().__init__(factory, metrics, max_queue, report_interval_s)
        self.index, self.owner = index, owner

    def _post(self, items) -> None:
        self._loop.call_soon_threadsafe(self.owner._outputs, items)

    def _gone(self) -> None:
        log.error("data-parallel replica %d went away; re-sending its requests", self.index)
        self._loop.call_soon_threadsafe(self.owner._lost, self.index)


@dataclass(eq=False)
class _Job:
    """One prompt of an HTTP request (one engine request of the caller's id)."""
    outer: RequestStream
    rid: str
    prompt: list[int]
    params: Any                                       # SamplingParams
    delivered: dict = field(default_factory=dict)     # sample index -> ids streamed so far
    finished: set = field(default_factory=set)        # sample indices that ended
    parts: list = field(default_factory=list)         # _Parts, one per attempt


@dataclass(eq=False)
class _Part:
    """One attempt of a job on one replica: the replica's stream and which samples it runs."""
    job: _Job
    replica: int
    stream: RequestStream
    samples: list[int]                                # inner sample index -> outer sample index
    left: int = 0
    open: bool = True


class DataParallelBridge:
    """N ReplicaBridges behind the prefix-aware router (see the module docstring)."""

    def __init__(self, factories: list[Callable[[], Any]], max_queue: int = 1024,
                 report_interval_s: float = 0.1, policy: str = "prefix",
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not factories:
            raise ValueError("data parallelism needs at least one replica factory")
        self.max_queue, self.clock, self.policy = max_queue, clock, policy
        self.replicas = [ReplicaBridge(i, self, f, Metrics(), max_queue, report_interval_s)
                         for i, f in enumerate(factories)]
        self.router = None                      # built once the block size is known (launch)
        self.down: set[int] = set()
        self.routed = [0] * len(factories)      # engine requests sent to each replica
        self.resent = 0                         # engine requests sent again after a replica died
        self.in_flight = 0                      # open HTTP requests
        self._parts: dict[str, _Part] = {}      # replica request id -> its part
        self._jobs: dict[RequestStream, list[_Job]] = {}
        self._attempt = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    def launch(self, timeout: float = START_TIMEOUT_S) -> list[dict]:
        """Start every replica (their models load at the same time) and wait for them all;
        returns each one's description (describe_for_parent). One failing stops the rest."""
        try:
            for r in self.replicas:
                r.spawn()
            out = [r.wait_ready(timeout) for r in self.replicas]
        except BaseException:
            for r in self.replicas:
                r.stop(5)
            raise
        chunk = out[0]["block_size"]
        self.router = POLICIES[self.policy](len(self.replicas), RouterConfig(chunk=chunk))
        return out

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start every replica's reader thread; outputs go to `loop`."""
        self._loop = loop or asyncio.get_running_loop()
        for r in self.replicas:
            r.start(self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every replica process."""
        for r in self.replicas:
            r.stop(timeout)

    def up(self) -> list[bool]:
        """Per replica: its process and reader run, and its loss was not handled yet."""
        return [i not in self.down and r.alive for i, r in enumerate(self.replicas)]

    @property
    def alive(self) -> bool:
        """True while at least one replica runs."""
        return any(self.up())

    @property
    def steps(self) -> int:
        """Engine steps over all replicas."""
        return sum(r.steps for r in self.replicas)

    async def call(self, fn: Callable[[Any], Any], replica: int = 0) -> Any:
        """Run the picklable `fn(engine)` in replica `replica`'s process."""
        return await self.replicas[replica].call(fn)

    # ---- requests (event loop) ------------------------------------------------------------
    def submit(self, prompts: list[list[int]], params, prefix: str) -> RequestStream:
        """Route each prompt to a replica and queue it there (ids `prefix-0`, ...); QueueFull
        past max_queue, EngineUnavailable when every replica is down."""
        if self.in_flight >= self.max_queue:
            raise QueueFull(f"the server holds {self.in_flight} requests (--max-queue "
                            f"{self.max_queue}); retry later")
        if not self.alive:
            raise EngineUnavailable(self._all_down())
        rids = [f"{prefix}-{i}" for i in range(len(prompts))]
        stream = RequestStream(rids, params.n, arrival=self.clock())
        self.in_flight += 1
        jobs = self._jobs[stream] = []
        for rid, ids in zip(rids, prompts):
            job = _Job(stream, rid, list(ids), params, {s: [] for s in range(params.n)})
            jobs.append(job)
            self._send(job, job.prompt, params, list(range(params.n)))
        return stream

    def close(self, stream: RequestStream, abort: bool) -> None:
        """The HTTP request is over: with `abort`, end its replicas' requests; idempotent."""
        if stream.closed:
            return
        stream.closed = True
        self.in_flight -= 1
        for job in self._jobs.pop(stream, []):
            for part in job.parts:
                if part.open:
                    self._close_part(part, abort)

    def _all_down(self) -> str:
        return (f"all {len(self.replicas)} data-parallel replicas are down (their processes "
                "exited); restart the server")

    def _send(self, job: _Job, prompt: list[int], params, samples: list[int]) -> None:
        """Route one attempt and queue it on the chosen replica (another if that one is gone)."""
        while True:
            up = self.up()
            if not any(up):
                self._fail(job, samples, self._all_down())
                return
            loads = [r.in_flight for r in self.replicas]
            i = self.router.route(prompt, loads, up)
            self._attempt += 1
            try:
                inner = self.replicas[i].submit([prompt], params, f"{job.rid}.{self._attempt}")
            except (EngineUnavailable, OSError, ValueError):
                self._lost(i)
                continue
            part = _Part(job, i, inner, samples, left=len(samples))
            job.parts.append(part)
            self._parts[inner.request_ids[0]] = part
            self.routed[i] += 1
            return

    def _close_part(self, part: _Part, abort: bool) -> None:
        part.open = False
        self._parts.pop(part.stream.request_ids[0], None)
        try:
            self.replicas[part.replica].close(part.stream, abort=abort)
        except (OSError, ValueError):             # the replica's pipe is gone
            pass

    def _fail(self, job: _Job, samples: list[int], why: str) -> None:
        outs = [RequestOutput(job.rid, [], "", True, FinishReason.ERROR, why,
                              ErrorKind.UNAVAILABLE, sample_index=s) for s in samples]
        job.finished.update(samples)
        if not job.outer.closed:
            job.outer.queue.put_nowait(outs)

    # ---- from the replicas (event loop) ---------------------------------------------------
    def _outputs(self, items: list[tuple[RequestStream, list]]) -> None:
        """One replica step's outputs: renamed to the caller's ids, one queue item per stream."""
        per_stream: dict[RequestStream, list] = {}
        for _, outs in items:
            for out in outs:
                part = self._parts.get(out.request_id)
                if part is None or not part.open:
                    continue
                job = part.job
                s = part.samples[out.sample_index]
                job.delivered[s] += out.new_token_ids
                if out.finished:
                    job.finished.add(s)
                    part.left -= 1
                per_stream.setdefault(job.outer, []).append(
                    dataclasses.replace(out, request_id=job.rid, sample_index=s))
                if part.left <= 0:
                    self._close_part(part, abort=False)
        for stream, outs in per_stream.items():
            if not stream.closed:
                stream.queue.put_nowait(outs)

    def _lost(self, index: int) -> None:
        """Replica `index` died: forget its cache, re-send its unfinished requests."""
        if index in self.down:
            return
        self.down.add(index)
        self.replicas[index].metrics.engine_gone()
        if self.router is not None:
            self.router.forget(index)
        orphans = [p for p in list(self._parts.values()) if p.replica == index and p.open]
        for part in orphans:
            self._close_part(part, abort=False)
            job = part.job
            if job.outer.closed:
                continue
            left = [s for s in part.samples if s not in job.finished]
            if left:
                self._resend(job, left)

    def _resend(self, job: _Job, samples: list[int]) -> None:
        """Send `samples` of `job` again (module docstring: as they were, or each alone from
        the tokens it streamed)."""
        if len(samples) == job.params.n and not any(job.delivered[s] for s in samples):
            self.resent += 1
            self._send(job, job.prompt, job.params, samples)
            return
        for s in samples:
            done = job.delivered[s]
            left = job.params.max_tokens - len(done)
            if left <= 0:                         # every token arrived but not the end
                job.finished.add(s)
                job.outer.queue.put_nowait([RequestOutput(job.rid, [], "", True,
                                                          FinishReason.MAX_TOKENS, sample_index=s)])
                continue
            seed = job.params.seed
            params = dataclasses.replace(job.params, n=1, max_tokens=left,
                                         seed=None if seed is None else seed + s)
            self.resent += 1
            self._send(job, job.prompt + done, params, [s])
