"""The engine's per-step fast paths (benchmarks/host_cost.py) against the rules they replace.

- `has_uncommitted(seq, n)` is one compare against a per-sequence `next_full` kept with the hash
  chain; the oracle is its definition, len(chain) < min(n // block_size, len(table)), over every
  n, for cacheable and uncacheable sequences, through admissions with a prefix hit, growth,
  commits one block at a time, forks, speculation roll-backs and frees.
- The scheduler's decodes-first order (two comprehensions instead of a keyed sort) and the
  length ahead it hands to ScheduledSeq equal a stable sort and Sequence.num_tokens_ahead.
"""
from __future__ import annotations

import random

from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.sampling_params import SamplingParams
from engine_helpers import engine, prompts

BS = 4


def _oracle(bm: BlockManager, sid: int, n: int) -> bool:
    tables = bm.seq_tables
    if not bm.has(sid) or not tables.is_cacheable(sid):
        return False
    return tables.chain_len(sid) < min(n // BS, len(bm.table(sid)))


def _check(bm: BlockManager, sids) -> None:
    for sid in sids:
        for n in range(0, 40):
            assert bm.has_uncommitted(sid, n) == _oracle(bm, sid, n), (sid, n)
    bm.check_invariants()                     # includes next_full == (len(chain) + 1) x bs


def test_has_uncommitted_equals_its_definition_through_a_workload():
    rng = random.Random(3)
    bm = BlockManager(64, BS)
    ids = {1: [rng.randrange(50) for _ in range(30)], 2: [rng.randrange(50) for _ in range(30)]}
    bm.admit(1, ids[1])
    bm.admit(2, ids[2], cacheable=False)
    _check(bm, [1, 2, 3])                     # 3: no table
    for end in range(1, 23):                  # grow one token at a time, commit some steps
        for sid in (1, 2):
            bm.prepare_write(sid, end - 1, end)
            if end % 3 == 0:
                bm.commit(sid, ids[sid], end)
        _check(bm, [1, 2])
    bm.fork(1, 4)
    _check(bm, [1, 4])
    bm.commit(4, ids[1], 22)
    bm.roll_back(4, 17)
    _check(bm, [1, 4])
    bm.free(1)
    bm.admit(5, ids[1][:20])                  # a prefix hit: its chain starts non-empty
    assert bm.seq_tables.chain_len(5) > 0
    _check(bm, [1, 4, 5])


def test_step_order_and_lengths_ahead_equal_the_plain_rules():
    e = engine(num_blocks=40, block_size=4, max_num_batched_tokens=10, max_num_seqs=6)
    for i, p in enumerate(prompts(6, 3, 17, seed=5)):
        e.add_request(p, SamplingParams(max_tokens=3 + i, ignore_eos=True))
    schedule, mixed = e.scheduler.schedule, []

    def checked():
        out = schedule()
        items = out.scheduled
        assert items == sorted(items, key=lambda s: 0 if s.num_tokens == 1 else 1)
        mixed.append(0 < sum(s.num_tokens == 1 for s in items) < len(items))
        for s in items:
            ahead = s.seq.num_tokens_ahead
            assert s.end == s.start + s.num_tokens
            assert s.needs_logits == (s.end == ahead)
            assert s.is_decode == (ahead - s.start == 1 and bool(s.seq.output_ids))
        return out

    e.scheduler.schedule = checked
    while e.has_unfinished():
        e.step()
    assert any(mixed)                          # some step held decodes and prefill chunks
