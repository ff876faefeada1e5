"""Data parallelism: N engine replicas in processes behind one router in this process.

`DataParallelEngines(source, n, config, policy="prefix")` spawns n processes (torch.
multiprocessing, spawn), each with its own Engine (model/engine/engine.py) on its own device
(cuda:i where CUDA is asked for, else the CPU) and its own KV pool. `submit(prompt, params)`
asks the router (router.py: the replica holding the prompt's longest prefix, else the least
loaded) and sends the request; `wait()` / `poll()` collect finished requests. A replica that
stops (killed, crashed) is seen by its process sentinel and the end of its pipe: its unfinished
requests are sent again to the others and finish there (from their prompt: a request returns
whole when it finishes, so nothing half-streamed is repeated to a caller); `resent` counts them.

Transport: one multiprocessing Pipe per replica (not torch.distributed): requests and results
are small, asynchronous Python objects and replicas run at their own pace, while collectives
are lock-step and a dead member stalls the group; one pipe per replica has one writer at each
end, so a replica killed mid-write cannot leave a lock held that the others need (a shared
multiprocessing.Queue can). Each result carries the replica's load and cache counters, which
`report()` turns into a ParallelReport of ReplicaLoads (model/engine/reports.py).
Not done: streaming outputs through the router, a replica restarting, requests with n > 1 or
beam search (plain requests only).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_any

import torch
import torch.multiprocessing as mp

from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.reports import ParallelReport, ReplicaLoad
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.parallel.random_model import ModelSource
from llm_playground.model.parallel.router import POLICIES, RouterConfig


@dataclass
class Finished:
    """One request's whole result: its ids, how it ended, where it ran."""
    request_id: int
    token_ids: list[int]
    finish_reason: object
    error: str | None
    replica: int
    attempts: int = 1                # > 1: it was re-sent after a replica stopped


@dataclass
class _Pending:
    prompt: list[int]
    params: SamplingParams
    replica: int
    attempts: int = 1


@dataclass
class _Replica:
    proc: object
    conn: object
    alive: bool = True
    stats: dict = field(default_factory=dict)
    routed: int = 0
    running: set = field(default_factory=set)


def _stats(engine, report=None) -> dict:
    cache = engine.cache_report() if report is None else report.cache
    return dict(num_running=len(engine.scheduler.running) + len(engine.scheduler.waiting),
                num_blocks=cache.num_blocks, num_used=cache.num_used + cache.num_shared,
                prefix_hits=cache.prefix_hits, prefix_queries=cache.prefix_queries)


def _replica_main(index: int, source: ModelSource, config: EngineConfig, conn,
                  threads: int | None) -> None:
    """One replica: build the engine, then take requests and step until told to stop."""
    from llm_playground.model.engine.engine import Engine
    if threads:
        torch.set_num_threads(threads)
    dev = (f"cuda:{index}" if (config.device or "").startswith("cuda") else "cpu")
    loaded, _ = source.load(dev)
    engine = Engine(loaded, config)
    conn.send(("ready", _stats(engine)))
    ids: dict[int, list[int]] = {}
    while True:
        busy = engine.has_unfinished()
        while conn.poll(0 if busy else 0.5):
            msg = conn.recv()
            if msg[0] == "stop":
                os._exit(0)
            _, rid, prompt, params = msg
            ids[rid] = []
            engine.add_request(prompt, params, request_id=rid)
            busy = True
        if not busy:
            continue
        report = engine.step()
        for out in report.outputs:
            if out.request_id not in ids or out.sample_index != 0:
                continue
            ids[out.request_id] += out.new_token_ids
            if out.finished:
                conn.send(("done", out.request_id, ids.pop(out.request_id), out.finish_reason,
                           out.error, _stats(engine, report)))


class DataParallelEngines:
    """N replicas behind one router (see the module docstring)."""

    def __init__(self, source: ModelSource, n: int, config: EngineConfig | None = None,
                 policy: str = "prefix", router_config: RouterConfig | None = None,
                 threads_per_replica: int | None = None, start_timeout_s: float = 300.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"data parallel size must be an int >= 1, got {n!r}")
        config = config or EngineConfig()
        rc = router_config or RouterConfig(chunk=config.block_size)
        self.router = POLICIES[policy](n, rc)
        self.pending: dict[int, _Pending] = {}
        self.finished: list[Finished] = []
        self.resent = 0
        self._next = 0
        ctx = mp.get_context("spawn")
        threads = threads_per_replica or max(1, (os.cpu_count() or 1) // n)
        self.replicas: list[_Replica] = []
        for i in range(n):
            parent, child = ctx.Pipe(duplex=True)
            p = ctx.Process(target=_replica_main, name=f"dp-replica-{i}", daemon=True,
                            args=(i, source, config, child, threads))
            p.start()
            child.close()
            self.replicas.append(_Replica(p, parent))
        deadline = time.monotonic() + start_timeout_s
        for i, r in enumerate(self.replicas):
            if not r.conn.poll(max(0.0, deadline - time.monotonic())):
                self.close()
                raise RuntimeError(f"data-parallel replica {i} did not start in {start_timeout_s:.0f} s")
            try:
                r.stats = r.conn.recv()[1]
            except EOFError:
                self.close()
                raise RuntimeError(f"data-parallel replica {i} exited while starting "
                                   f"(exit code {r.proc.exitcode})") from None

    # ---- requests ------------------------------------------------------------------------------
    def _loads(self) -> list[int]:
        return [len(r.running) for r in self.replicas]

    def _send(self, rid: int, pend: _Pending) -> None:
        while True:
            i = self.router.route(pend.prompt, self._loads(), [r.alive for r in self.replicas])
            try:
                self.replicas[i].conn.send(("add", rid, pend.prompt, pend.params))
            except (BrokenPipeError, OSError):
                self._lost(i)
                continue
            pend.replica = i
            self.replicas[i].routed += 1
            self.replicas[i].running.add(rid)
            return

    def submit(self, prompt: list[int], params: SamplingParams | None = None) -> int:
        """Route and send one request; returns its id."""
        rid, self._next = self._next, self._next + 1
        pend = _Pending(list(prompt), params or SamplingParams(), -1)
        self.pending[rid] = pend
        self._send(rid, pend)
        return rid

    def _lost(self, i: int) -> None:
        """Replica i stopped: forget its cache, send its unfinished requests elsewhere."""
        r = self.replicas[i]
        if not r.alive:
            return
        r.alive = False
        self.router.forget(i)
        orphans, r.running = sorted(r.running), set()
        for rid in orphans:
            pend = self.pending[rid]
            pend.attempts += 1
            self.resent += 1
            self._send(rid, pend)

    def poll(self, timeout: float = 0.0) -> list[Finished]:
        """Results that arrived within `timeout` seconds (handles stopped replicas)."""
        live = [r for r in self.replicas if r.alive]
        ready = wait_any([r.conn for r in live] + [r.proc.sentinel for r in live], timeout)
        done = []
        for i, r in enumerate(self.replicas):
            if not r.alive:
                continue
            try:
                while r.conn.poll(0):
                    msg = r.conn.recv()
                    if msg[0] == "done":
                        _, rid, ids, reason, error, stats = msg
                        r.stats = stats
                        r.running.discard(rid)
                        pend = self.pending.pop(rid)
                        done.append(Finished(rid, ids, reason, error, i, pend.attempts))
            except (EOFError, OSError):
                pass
            if r.proc.sentinel in ready or not r.proc.is_alive():
                self._lost(i)
        self.finished += done
        return done

    def wait(self, timeout_s: float = 600.0) -> list[Finished]:
        """Block until every submitted request finished; returns those finished in this call."""
        out, deadline = [], time.monotonic() + timeout_s
        while self.pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.pending)} requests unfinished after {timeout_s:.0f} s")
            out += self.poll(0.5)
        return out

    def stop_replica(self, i: int) -> None:
        """Kill replica i now (tests, drills); its requests move on the next poll."""
        self.replicas[i].proc.kill()
        self.replicas[i].proc.join(10)

    # ---- reports -------------------------------------------------------------------------------
    def report(self) -> ParallelReport:
        """Each replica's pool and load as last heard, and how many requests it got."""
        reps = [ReplicaLoad(i, r.alive, len(r.running), r.stats.get("num_blocks", 0),
                            r.stats.get("num_used", 0), r.stats.get("prefix_hits", 0),
                            r.stats.get("prefix_queries", 0), r.routed)
                for i, r in enumerate(self.replicas)]
        return ParallelReport("data", len(self.replicas), replicas=reps)

    def hit_rate(self) -> float:
        """Prompt tokens the replicas' prefix caches served, over tokens looked up (all replicas,
        as last reported)."""
        hits = sum(r.stats.get("prefix_hits", 0) for r in self.replicas)
        queries = sum(r.stats.get("prefix_queries", 0) for r in self.replicas)
        return hits / queries if queries else 0.0

    def close(self) -> None:
        """Stop every replica."""
        for r in self.replicas:
            if r.alive and r.proc.is_alive():
                try:
                    r.conn.send(("stop",))
                except (BrokenPipeError, OSError):
                    pass
        for r in self.replicas:
            r.proc.join(10)
            if r.proc.is_alive():
                r.proc.kill()
                r.proc.join(5)
            r.alive = False
