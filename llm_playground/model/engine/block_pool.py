"""The physical KV blocks as a struct of arrays: what each block holds and who holds it.

One `BlockPool` owns every per-physical-block fact, one array entry per block:
- the reference count and the owners (sequence ids) of each block,
- the hash and token ids of each block registered in the prefix cache (None otherwise),
- the free list (blocks that hold nothing reusable, handed out FIFO) and the LRU of cached
  blocks (ref count 0 but hashed: reusable by a later prompt, evicted oldest first when a fresh
  block is needed and the free list is empty),
- how many tokens each block holds (`fill`: the block manager reports every write, `fill_to`;
  a block's owners all hold it at one logical index and only ever write further, so the
  fullest owner's count is the largest written), and the running total of unfilled slots of
  owned blocks, so the summary report costs O(1),
- a running count of shared blocks (ref count > 1),
- the report cache: `BlockInfo`s rebuilt only for blocks touched since the last report.
A block's state (FREE / CACHED / USED / SHARED) is derived from its ref count and hash.

It does not know about sequences' tables, the hash chain or the hash -> block index (that is
model/engine/prefix_index.py, which the block manager tells when `alloc` evicts a block).
"""
from __future__ import annotations

from collections import OrderedDict, deque

from llm_playground.model.engine.reports import CACHED, FREE, SHARED, USED, BlockInfo


class NoFreeBlocksError(RuntimeError):
    """Raised when a block is needed and neither the free list nor the prefix cache can give one."""


class BlockPool:
    """Ref counts, owners, hashes and token ids of `num_blocks` physical blocks, with the free
    list and the LRU of cached blocks. `ref_count(b)` (sequences whose table holds block b) is
    the ref-count list's own bound __getitem__, and `touch_block(b)` (`touch` for a real block,
    b >= 0) the dirty set's bound add: they run per sequence per step."""

    def __init__(self, num_blocks: int, block_size: int = 1) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._fill = [0] * num_blocks                            # tokens written in the block
        self._unfilled = 0                                       # sum of bs - fill, owned blocks
        self._ref = [0] * num_blocks
        self._owners: list[set[int]] = [set() for _ in range(num_blocks)]
        self._hash: list[int | None] = [None] * num_blocks
        self._tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._lru: OrderedDict[int, None] = OrderedDict()        # ref 0 + hashed; oldest first
        self._num_shared = 0                                     # blocks with ref count > 1
        self._evictions = 0
        # Report cache: BlockInfo objects are immutable once published; only blocks touched since
        # the last report are rebuilt, so a report costs O(changed blocks), not O(pool).
        self._infos: list[BlockInfo | None] = [None] * num_blocks
        self._dirty: set[int] = set(range(num_blocks))
        self.ref_count = self._ref.__getitem__
        self.ref_counts = self._ref              # the same list, read only (subscript reads)
        self.touch_block = self._dirty.add       # (b >= 0): see `touch`; `_dirty` is never rebound

    # ---- reads -------------------------------------------------------------------------------
    def owners(self, b: int) -> list[int]:
        """The sequence ids holding block b, sorted."""
        return sorted(self._owners[b])

    def hash_of(self, b: int) -> int | None:
        """The prefix-cache hash of block b (None when it is not registered)."""
        return self._hash[b]

    def tokens_of(self, b: int) -> tuple[int, ...] | None:
        """The token ids block b caches (None when it is not registered)."""
        return self._tokens[b]

    def state(self, b: int) -> str:
        """FREE, CACHED (unowned, hashed), USED (one owner) or SHARED (several)."""
        ref = self._ref[b]
        if ref == 0:
            return CACHED if self._hash[b] is not None else FREE
        return SHARED if ref > 1 else USED

    @property
    def num_free(self) -> int:
        """Blocks on the free list."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        """Unowned blocks kept for the prefix cache (evictable)."""
        return len(self._lru)

    @property
    def num_available(self) -> int:
        """Blocks that can be handed out now: free ones plus evictable cached ones."""
        return len(self._free) + len(self._lru)

    @property
    def num_owned(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.num_blocks - len(self._free) - len(self._lru)

    @property
    def num_shared(self) -> int:
        """Blocks referenced by more than one sequence."""
        return self._num_shared

    @property
    def evictions(self) -> int:
        """Cached blocks evicted to serve an allocation, cumulative."""
        return self._evictions

    @property
    def unfilled_slots(self) -> int:
        """Slots of owned blocks not holding a token (a running total: O(1))."""
        return self._unfilled

    def fill(self, b: int) -> int:
        """Tokens block b holds: block_size if hashed (cached or owned), what was written into
        it if owned, 0 if free."""
        if self._hash[b] is not None:
            return self.block_size
        return self._fill[b] if self._ref[b] else 0

    def num_shared_in(self, table: list[int], lo: int, hi: int) -> int:
        """How many of table[lo:hi] are real blocks with ref count > 1 (copy-on-write needed)."""
        ref, n = self._ref, 0
        for i in range(lo, hi):
            b = table[i]
            if b >= 0 and ref[b] > 1:
                n += 1
        return n

    def num_unowned_in(self, blocks: list[int]) -> int:
        """How many of `blocks` have ref count 0 (taking them shrinks `num_available`)."""
        ref = self._ref
        return sum(1 for b in blocks if ref[b] == 0)

    # ---- changes -----------------------------------------------------------------------------
    def alloc(self) -> tuple[int, int | None]:
        """(a block with ref count 0 and no hash, the hash it was evicted under or None).
        The free list comes first (FIFO); else the least recently freed cached block is evicted
        (the caller drops the returned hash from its index). Raises NoFreeBlocksError."""
        if self._free:
            b = self._free.popleft()
            self._fill[b] = 0
            return b, None
        if self._lru:
            b, _ = self._lru.popitem(last=False)
            self._dirty.add(b)
            h = self._hash[b]
            self._hash[b] = None
            self._tokens[b] = None
            self._fill[b] = 0
            self._evictions += 1
            return b, h
        raise NoFreeBlocksError("no free KV blocks")

    def incref(self, b: int, seq_id: int) -> None:
        """seq_id now holds block b (a cached block leaves the LRU)."""
        self._dirty.add(b)
        ref = self._ref[b]
        if ref == 0:
            self._lru.pop(b, None)
            self._unfilled += self.block_size - self._fill[b]
        elif ref == 1:
            self._num_shared += 1
        self._ref[b] = ref + 1
        self._owners[b].add(seq_id)

    def decref(self, b: int, seq_id: int) -> None:
        """seq_id lets go of block b; at ref count 0 it becomes cached (hashed) or free."""
        self._dirty.add(b)
        ref = self._ref[b] - 1
        self._ref[b] = ref
        if ref == 1:
            self._num_shared -= 1
        self._owners[b].discard(seq_id)
        if ref == 0:
            self._unfilled -= self.block_size - self._fill[b]
            if self._hash[b] is not None:
                self._lru[b] = None               # most recently used at the end
            else:
                self._free.append(b)

    def set_hash(self, b: int, h: int, tokens: tuple[int, ...]) -> None:
        """Block b (full, K/V written) now caches `tokens` under hash h."""
        self._dirty.add(b)
        self._hash[b] = h
        self._tokens[b] = tokens
        self.fill_to(b, self.block_size)

    def fill_to(self, b: int, n: int) -> None:
        """Block b (owned) now holds at least n tokens (written this step)."""
        old = self._fill[b]
        if n > old:
            self._fill[b] = n
            if self._ref[b]:
                self._unfilled -= n - old
        self._dirty.add(b)

    def unfill_to(self, b: int, n: int) -> None:
        """Block b (owned by one sequence, not hashed) holds only its first n tokens now: the
        rest were a rejected speculation (model/engine/spec_planner.py)."""
        old = self._fill[b]
        if n < old:
            self._fill[b] = n
            if self._ref[b]:
                self._unfilled += old - n
        self._dirty.add(b)

    def copy_fill(self, src: int, dst: int) -> None:
        """dst (owned, fresh) is a copy-on-write copy of src: it holds what src holds."""
        self.fill_to(dst, self._fill[src])

    def clear_hash(self, b: int) -> int | None:
        """Block b no longer caches anything (its K/V cannot be trusted); returns the old hash."""
        self._dirty.add(b)
        h, self._hash[b], self._tokens[b] = self._hash[b], None, None
        return h

    def touch(self, b: int) -> None:
        """Block b's filled-token count changed: rebuild its BlockInfo at the next report."""
        if b >= 0:
            self._dirty.add(b)

    def touch_all(self, blocks) -> None:
        """`touch` each of blocks (holes, -1, are skipped)."""
        self._dirty.update(b for b in blocks if b >= 0)

    # ---- reports -----------------------------------------------------------------------------
    def block_infos(self) -> list[BlockInfo]:
        """One BlockInfo per block (`fill` tokens each); only blocks touched since the last
        call are rebuilt (O(changes)), the rest are the same immutable objects as before; the
        returned list itself is a new one (one pointer copy per block)."""
        fill = self.fill
        for b in self._dirty:
            self._infos[b] = BlockInfo(block_id=b, state=self.state(b), ref_count=self._ref[b],
                                       owners=sorted(self._owners[b]), num_tokens=fill(b))
        self._dirty.clear()
        return list(self._infos)

    def counts(self) -> dict[str, int]:
        """Blocks per state, recounted over the pool (O(pool); see `state_counts`)."""
        c = {FREE: 0, CACHED: 0, USED: 0, SHARED: 0}
        for b in range(self.num_blocks):
            c[self.state(b)] += 1
        return c

    def state_counts(self) -> dict[str, int]:
        """Blocks per state from the running counters (O(1)); equals `counts()`."""
        owned = self.num_owned
        return {FREE: len(self._free), CACHED: len(self._lru),
                USED: owned - self._num_shared, SHARED: self._num_shared}

    def check_invariants(self, member: dict[int, set[int]], index: dict[int, int]) -> None:
        """Raise AssertionError unless the pool agrees with `member` (block -> sequences whose
        table holds it) and `index` (hash -> block of the prefix cache)."""
        for b in range(self.num_blocks):
            assert self._ref[b] == len(member.get(b, ())), f"block {b}: ref count != table membership"
            assert self._owners[b] == member.get(b, set()), f"block {b}: owners != table membership"
        free, evict = set(self._free), set(self._lru)
        assert len(free) == len(self._free), "free list holds a block twice"
        assert not free & evict, "a block is both free and cached"
        for b in free | evict:
            assert self._ref[b] == 0, f"block {b} is free but referenced"
        for b in evict:
            assert self._hash[b] is not None and index[self._hash[b]] == b
        for h, b in index.items():
            assert self._hash[b] == h, f"index entry {h} -> block {b} carries another hash"
        idle = [b for b in range(self.num_blocks) if self._ref[b] == 0]
        assert set(idle) == free | evict, "an unreferenced block is neither free nor cached"
        unfilled = sum(self.block_size - self._fill[b] for b in range(self.num_blocks)
                       if self._ref[b])
        assert unfilled == self._unfilled, "unfilled-slot total out of step"
        for b in range(self.num_blocks):
            assert 0 <= self._fill[b] <= self.block_size, f"block {b}: fill out of range"
            if self._hash[b] is not None:
                assert self._fill[b] == self.block_size, f"block {b}: hashed but not full"
        c = self.counts()
        assert c[FREE] + c[CACHED] + c[USED] + c[SHARED] == self.num_blocks
        assert c[SHARED] == self._num_shared, "shared-block counter out of step"
        assert c[USED] + c[SHARED] == self.num_owned
        assert c == self.state_counts(), "state counters out of step"
