"""The KV tab's load test (F8): synthetic requests sized so that the pool they run in fills up.

What it must show, on any pool: blocks allocated, shared (a prefix common to half the requests,
two samples from one prompt for every third request), copied on write (the two samples' first
writes into the block they share), preempted (more demand than the pool) and freed (requests of
different lengths end at different steps). With a pool much larger than the load's demand
(the default: 1,456 blocks of 16 tokens, a 23k-token cache) nothing would ever be preempted, so
the load then runs on a pool of its own: a second Engine on the same loaded model (the weights
are shared; only a small KV cache is allocated), about half the load's peak demand. The KV tab
says which pool it shows.

`LoadTest` plans the requests, admits one per step (staggered arrivals: later requests find the
shared prefix in the cache) and counts what each StepReport shows happened. The engine worker
(engine_worker.py) owns it and steps its engine; this module posts nothing.
"""
from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground.messages import LoadStats

OWN_POOL_ABOVE = 0.8      # a pool this share of the peak demand or more never fills: use our own
OWN_POOL_SHARE = 0.5      # the own pool: this share of the peak demand ...
OWN_POOL_MIN_FACTOR = 2   # ... but room for the largest sequence twice over (so it always runs)


def plan_requests(n: int, vocab_size: int, prompt_len: int = 48, max_tokens: int = 64,
                  seed: int = 0) -> list[tuple[list[int], SamplingParams]]:
    """N synthetic requests: even ones share a prefix, every third samples twice, lengths vary."""
    rng = random.Random(seed)
    vocab = max(2, min(vocab_size, 4096))
    shared_prefix = [rng.randrange(1, vocab) for _ in range(prompt_len)]
    out = []
    for i in range(n):
        own = [rng.randrange(1, vocab) for _ in range(rng.randint(prompt_len // 4, prompt_len))]
        ids = (shared_prefix + own) if i % 2 == 0 else own + shared_prefix[: prompt_len // 2]
        params = SamplingParams(temperature=0.8, max_tokens=rng.randint(max_tokens // 4, max_tokens),
                                seed=seed + i, ignore_eos=True, n=2 if i % 3 == 0 else 1)
        out.append((ids, params))
    return out


def demand_blocks(requests: list[tuple[list[int], SamplingParams]], block_size: int) -> tuple[int, int]:
    """(blocks all sequences would hold at their longest, without any sharing; the largest
    single sequence's blocks)."""
    per_seq = [math.ceil((len(ids) + p.max_tokens) / block_size) for ids, p in requests]
    return sum(b * p.n for b, (_, p) in zip(per_seq, requests)), max(per_seq, default=0)


def own_pool_size(chat_blocks: int, demand: int, largest: int) -> int | None:
    """Blocks of the load test's own pool, or None when the chat's pool is small enough that the
    load fills it."""
    if chat_blocks < OWN_POOL_ABOVE * demand:
        return None
    return max(math.ceil(OWN_POOL_SHARE * demand), OWN_POOL_MIN_FACTOR * largest + 2)


class LoadTest:
    """One run of the load test: its engine (the chat's or its own), queue and counts."""

    def __init__(self, chat_engine: Any, n: int, prompt_len: int = 48, max_tokens: int = 64,
                 seed: int = 0) -> None:
        from llm_playground.model.engine.engine import Engine
        chat_cache = chat_engine.cache_report()
        vocab = chat_engine.tokenizer.vocab_size if chat_engine.tokenizer is not None else 256
        self.queue = plan_requests(n, vocab, prompt_len, max_tokens, seed)
        demand, largest = demand_blocks(self.queue, chat_cache.block_size)
        size = own_pool_size(chat_cache.num_blocks, demand, largest)
        # Under tensor parallelism a second engine would need ranks of its own: share the chat's.
        if size is None or getattr(chat_engine, "world", 1) > 1:
            self.engine, self.own_pool = chat_engine, False
        else:
            config = replace(chat_engine.config, num_blocks=size, kv_cache_bytes=None)
            self.engine = Engine(chat_engine.loaded, config, clock=chat_engine.clock)
            self.engine.set_pattern(str(chat_engine.pattern))
            self.own_pool = True
        self.request_ids: set[Any] = set()       # added and not finished
        pool = self.engine.cache_report().num_blocks
        self.stats = LoadStats(requests=n, samples=sum(p.n for _, p in self.queue),
                               pool_blocks=pool, chat_pool_blocks=chat_cache.num_blocks,
                               own_pool=self.own_pool)
        self._start_preemptions = self.engine.cache_report().preemptions
        self._refs: dict[int, int] | None = None        # block id -> ref count, last report
        self._tables: dict[int, list[int]] = {}         # running seq id -> table, last report

    @property
    def active(self) -> bool:
        """Requests still queued or running."""
        return bool(self.queue or self.request_ids)

    def admit_one(self) -> None:
        """Add the next queued request (one per step)."""
        if self.queue:
            ids, params = self.queue.pop(0)
            self.request_ids.add(self.engine.add_request(ids, params))

    def abort(self) -> None:
        """Stop every request of the load (the engine failed a step)."""
        self.queue.clear()
        for rid in list(self.request_ids):
            try:
                self.engine.abort(rid)
            except Exception:
                pass
        self.request_ids.clear()

    def observe(self, report: Any) -> None:
        """Count what this step's report shows: blocks newly held and released, shared blocks,
        copies on write (a running sequence's block that was shared now replaced by its own
        copy), preemptions, finished requests."""
        mine = self.request_ids
        for out in report.outputs:
            if out.finished and out.request_id in mine and not any(
                    s.request_id == out.request_id and s.status != "finished" for s in report.sequences):
                mine.discard(out.request_id)
                self.stats.finished += 1
        st = self.stats
        refs = {b.block_id: b.ref_count for b in report.cache.blocks}
        if self._refs is not None and refs:
            st.allocated += sum(1 for b, r in refs.items() if r > 0 and self._refs.get(b, 0) == 0)
            st.freed += sum(1 for b, r in refs.items() if r == 0 and self._refs.get(b, 0) > 0)
        st.peak_shared = max(st.peak_shared, report.cache.num_shared)
        st.peak_used = max(st.peak_used, report.cache.num_used + report.cache.num_shared)
        tables = {s.seq_id: s.block_table for s in report.sequences if s.status == "running"}
        if self._refs is not None:
            for sid, table in tables.items():
                before = self._tables.get(sid, [])
                st.copy_on_write += sum(1 for i, (old, new) in enumerate(zip(before, table))
                                        if old != new and old >= 0 and new >= 0 and self._refs.get(old, 0) > 1)
        self._refs, self._tables = refs or self._refs, tables
        st.preemptions = report.cache.preemptions - self._start_preemptions
        st.done = not self.active
