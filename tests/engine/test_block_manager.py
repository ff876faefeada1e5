"""Block manager: unit cases and a hypothesis state machine over random workloads.

The state machine keeps its own model of every sequence (token ids, tokens written) and a fake
KV pool where each slot holds the token id written there; after every rule it checks the
bookkeeping invariants and that every sequence reads back exactly its own tokens through its
block table (so a write into a shared block, a missed copy-on-write or a wrong prefix hit shows).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llm_playground.model.engine.block_manager import BlockManager, NoFreeBlocksError
from llm_playground.model.engine.prefix_index import PrefixIndex
from llm_playground.model.engine.reports import CACHED, FREE, SHARED, USED

BS = 4


def write(bm: BlockManager, pool: list, sid: int, ids: list[int], start: int, end: int) -> None:
    """Grow/COW, then 'write K/V' (the token id) into the slots, as the engine does."""
    for src, dst in bm.prepare_write(sid, start, end):
        pool[dst * BS:(dst + 1) * BS] = pool[src * BS:(src + 1) * BS]
    for pos, slot in zip(range(start, end), bm.slot_mapping(sid, start, end)):
        b = slot // BS
        assert bm.ref_count(b) == 1, f"write into shared block {b}"
        assert bm.block_hash(b) is None, f"write into cached (hashed, immutable) block {b}"
        pool[slot] = ids[pos]
    bm.commit(sid, ids, end)


def test_prefix_hit_shares_full_blocks_and_leaves_one_token():
    bm = BlockManager(16, BS)
    pool = [None] * 16 * BS
    a = list(range(10, 22))                      # 12 tokens = 3 full blocks
    assert bm.admit(1, a) == 0
    write(bm, pool, 1, a, 0, 12)
    bm.free(1)
    assert bm.counts()[CACHED] == 3 and bm.counts()[USED] == 0
    # The same prompt: cached up to a block boundary, so only 2 blocks may be reused.
    assert bm.admit(2, a) == 8
    # A prompt sharing the first 5 tokens gets exactly one block.
    b = a[:5] + [99] * 7
    assert bm.admit(3, b) == 4
    assert bm.ref_count(bm.table(3)[0]) == 2 and bm.state(bm.table(3)[0]) == SHARED
    bm.check_invariants()


def test_lookup_compares_token_ids_not_only_hashes(monkeypatch):
    bm = BlockManager(8, BS)
    pool = [None] * 8 * BS
    a = [1, 2, 3, 4, 5]
    # Force every chain hash to collide (the block is registered under the colliding hash too):
    # a different prompt finds the hash in the index but must still miss on the token ids.
    monkeypatch.setattr(PrefixIndex, "chain_hash", staticmethod(lambda parent, toks: 7))
    bm.admit(1, a)
    write(bm, pool, 1, a, 0, 5)
    assert bm.prefix_index.block_for(7) == bm.table(1)[0]
    bm2_tokens = [9, 9, 9, 9, 9]
    assert bm.lookup_prefix(bm2_tokens) == []
    assert bm.lookup_prefix(a) == [bm.table(1)[0]]        # the same tokens still hit


def test_lru_eviction_takes_oldest_cached_block_first():
    bm = BlockManager(4, BS)
    pool = [None] * 4 * BS
    for sid, base in ((1, 0), (2, 100)):
        ids = list(range(base, base + BS)) + [0]
        bm.admit(sid, ids)
        write(bm, pool, sid, ids, 0, BS + 1)
        bm.free(sid)
    first, second = bm.lookup_prefix(list(range(0, BS)) + [0]), bm.lookup_prefix(list(range(100, 104)) + [0])
    assert first and second
    bm.admit(3, [7])
    bm.prepare_write(3, 0, 3 * BS)              # 3 blocks: 2 free + evict the oldest cached
    assert bm.lookup_prefix(list(range(0, BS)) + [0]) == []
    assert bm.lookup_prefix(list(range(100, 104)) + [0]) == second
    bm.check_invariants()


def test_eviction_drops_the_index_entry_and_is_counted():
    """The pool's LRU and the prefix index stay in step: an evicted block leaves the index, its
    hash and tokens are cleared, and the O(1) state counters equal a recount throughout."""
    bm = BlockManager(2, BS)
    pool = [None] * 2 * BS
    ids = list(range(BS)) + [0]
    bm.admit(1, ids)
    write(bm, pool, 1, ids, 0, BS + 1)
    cached = bm.table(1)[0]
    h = bm.block_hash(cached)
    assert h is not None and bm.prefix_index.block_for(h) == cached
    bm.free(1)
    assert bm.state_counts() == bm.counts() == {FREE: 1, CACHED: 1, USED: 0, SHARED: 0}
    assert bm.evictions == 0
    bm.admit(2, [7])
    bm.prepare_write(2, 0, 2 * BS)               # the free block, then the cached one
    assert bm.evictions == 1 and bm.table(2)[1] == cached
    assert bm.block_hash(cached) is None and bm.prefix_index.block_for(h) is None
    assert bm.state_counts() == bm.counts() == {FREE: 0, CACHED: 0, USED: 2, SHARED: 0}
    bm.check_invariants()


def test_fork_then_write_copies_the_shared_last_block():
    bm = BlockManager(8, BS)
    pool = [None] * 8 * BS
    ids = [1, 2, 3, 4, 5, 6]
    bm.admit(1, ids)
    write(bm, pool, 1, ids, 0, 6)
    bm.fork(1, 2)
    last = bm.table(1)[1]
    assert bm.state(last) == SHARED
    assert bm.blocks_needed(2, 6, 7) == 1
    write(bm, pool, 2, ids + [50], 6, 7)
    assert bm.table(2)[1] != last and bm.table(2)[0] == bm.table(1)[0]
    assert pool[bm.table(2)[1] * BS: bm.table(2)[1] * BS + 3] == [5, 6, 50]
    assert pool[last * BS: last * BS + 2] == [5, 6] and pool[last * BS + 2] is None
    assert bm.cow_copies == 1
    bm.check_invariants()


def test_out_of_blocks_raises_without_partial_growth():
    bm = BlockManager(2, BS)
    bm.admit(1, [1])
    with pytest.raises(NoFreeBlocksError):
        bm.prepare_write(1, 0, 3 * BS)
    assert bm.table(1) == [] and bm.counts()[FREE] == 2


def test_holes_from_a_sliding_pattern():
    bm = BlockManager(8, BS)
    pool = [None] * 8 * BS
    ids = list(range(12))
    bm.admit(1, ids, cacheable=False)
    write(bm, pool, 1, ids, 0, 12)
    assert bm.free_logical(1, [0, 1]) == 2
    assert bm.table(1)[:2] == [-1, -1] and bm.counts()[FREE] == 7
    bm.check_invariants()
    bm.free(1)
    assert bm.counts()[FREE] == 8


class BlockManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(24, BS)
        self.pool: list = [None] * 24 * BS
        self.seqs: dict[int, list[int]] = {}       # sid -> token ids
        self.written: dict[int, int] = {}          # sid -> tokens whose K/V is in the pool
        self.next_id = 0

    def _new(self) -> int:
        self.next_id += 1
        return self.next_id

    def _try_write(self, sid: int, end: int) -> bool:
        start = self.written[sid]
        if self.bm.blocks_needed(sid, start, end) > self.bm.num_available:
            return False
        write(self.bm, self.pool, sid, self.seqs[sid], start, end)
        self.written[sid] = end
        return True

    @rule(prefix=st.sampled_from([[], [1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7, 8]]),
          tail=st.lists(st.integers(0, 3), min_size=1, max_size=10))
    def add(self, prefix, tail):
        ids = prefix + tail
        need, avail = self.bm.blocks_needed_to_admit(ids, len(ids), True)
        if need > avail:
            return
        sid = self._new()
        cached = self.bm.admit(sid, ids)
        assert cached % BS == 0 and cached < len(ids)
        for i in range(cached):   # a prefix hit must hold exactly these tokens
            b = self.bm.table(sid)[i // BS]
            assert self.pool[b * BS + i % BS] == ids[i]
        self.seqs[sid], self.written[sid] = ids, cached
        assert self._try_write(sid, len(ids))

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(sorted(self.seqs)))
        sid = self._new()
        self.bm.fork(parent, sid)
        self.seqs[sid] = list(self.seqs[parent][:self.written[parent]])
        self.written[sid] = self.written[parent]

    @precondition(lambda self: self.seqs)
    @rule(data=st.data(), tok=st.integers(0, 3))
    def append(self, data, tok):
        sid = data.draw(st.sampled_from(sorted(self.seqs)))
        self.seqs[sid] = self.seqs[sid][:self.written[sid]] + [tok]
        if not self._try_write(sid, len(self.seqs[sid])):
            self.preempt_one(sid)

    def preempt_one(self, sid):
        self.bm.free(sid)
        del self.seqs[sid], self.written[sid]

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def preempt_and_resume(self, data):
        sid = data.draw(st.sampled_from(sorted(self.seqs)))
        ids = self.seqs[sid][:self.written[sid]] or [0]
        self.bm.free(sid)
        del self.seqs[sid], self.written[sid]
        need, avail = self.bm.blocks_needed_to_admit(ids, len(ids), True)
        if need <= avail:
            new = self._new()
            self.bm.admit(new, ids)
            self.seqs[new], self.written[new] = ids, 0
            self.written[new] = len(self.bm.table(new)) * BS
            assert self._try_write(new, len(ids))

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def finish_or_abort(self, data):
        self.preempt_one(data.draw(st.sampled_from(sorted(self.seqs))))

    @invariant()
    def consistent(self):
        self.bm.check_invariants()
        c = self.bm.counts()
        assert c[FREE] + c[CACHED] + c[USED] + c[SHARED] == self.bm.num_blocks
        for sid, n in self.written.items():
            for pos, slot in enumerate(self.bm.slot_mapping(sid, 0, n)):
                assert self.pool[slot] == self.seqs[sid][pos], f"seq {sid} reads a wrong token at {pos}"

    def teardown(self):
        for sid in list(self.seqs):
            self.bm.free(sid)
        self.bm.check_invariants()
        c = self.bm.counts()
        assert c[USED] == c[SHARED] == 0, "blocks leaked"
        assert c[FREE] + c[CACHED] == self.bm.num_blocks


TestBlockManagerMachine = BlockManagerMachine.TestCase
TestBlockManagerMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])


def test_table_rows_mirror_grows_past_its_initial_rows_and_width():
    """The numpy mirror that build_batch packs from (model/engine/table_rows.py) must equal the Python
    tables after the mirror doubles its rows (more live sequences than it started with) and its
    width (a table longer than its first width), through forks, copy-on-write and frees."""
    bm = BlockManager(4096, BS)
    rows0, width0 = bm.seq_tables.mirror_shape
    sids = list(range(rows0 + 5))
    for sid in sids:
        bm.admit(sid, list(range(sid, sid + 3)))
        bm.prepare_write(sid, 0, 3)
    long_len = (width0 + 3) * BS
    bm.prepare_write(0, 3, long_len)                   # seq 0's table outgrows the width
    bm.fork(0, 10_000)
    bm.prepare_write(10_000, long_len - 1, long_len)   # copy-on-write of the shared tail block
    bm.free(sids[1])
    bm.free_logical(sids[2], [0])                       # a hole
    bm.check_invariants()
    live = [0, 10_000, sids[2], sids[-1]]
    width = max(len(bm.table(s)) for s in live)
    got = bm.table_rows(live, width).tolist()
    want = [bm.table(s) + [-1] * (width - len(bm.table(s))) for s in live]
    assert got == want
    assert bm.seq_tables.mirror_shape[0] > rows0 and bm.seq_tables.mirror_shape[1] > width0
