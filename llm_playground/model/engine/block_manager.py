"""Ownership of the paged KV cache's physical blocks: free list, ref counts, tables, prefix cache.

The block manager decides which physical block holds which sequence's tokens. It keeps
- a free list of blocks that hold nothing reusable,
- reference counts and owners (sequence ids) per block,
- one block table per sequence (logical block -> physical block; -1 = a hole freed by a sliding
  attention pattern),
- a prefix cache: every FULL block gets a hash chained over its parent's hash and its token ids
  (the ids are stored too and compared on lookup, so a hash collision can never share wrong K/V).
  The chain's root is salted with the attention pattern: K/V of layers past the first depend on
  the mask, so blocks computed under `atrous:4` must never serve a dense request.
  A freed block that carries a hash stays cached (state CACHED) and is reused by a later prompt
  with the same prefix; when a fresh block is needed and the free list is empty, the least
  recently freed cached block is evicted.
- copy-on-write: before a sequence writes into a block it shares with others (after `fork`),
  `prepare_write` gives it a private copy and returns (src, dst) pairs that the engine copies in
  the KV pool (KVCache.copy_block).

It only does bookkeeping on ints: it never touches the KV tensors and does not schedule.
"""
from __future__ import annotations

from collections import OrderedDict, deque

from llm_playground.model.engine.reports import CACHED, FREE, SHARED, USED, BlockInfo
from llm_playground.model.engine.table_rows import TableRows

_ROOT_HASH = hash(("kv-prefix-root",))


class NoFreeBlocksError(RuntimeError):
    """Raised when a block is needed and neither the free list nor the prefix cache can give one."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"block manager needs num_blocks >= 1 and block_size >= 1 "
                             f"(got {num_blocks}, {block_size})")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_count = [0] * num_blocks
        self.owners: list[set[int]] = [set() for _ in range(num_blocks)]
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self.hash_to_block: dict[int, int] = {}
        self.free_list: deque[int] = deque(range(num_blocks))
        self.evictable: OrderedDict[int, None] = OrderedDict()   # ref 0 + hashed; oldest first
        self.tables: dict[int, list[int]] = {}
        self.rows = TableRows()          # numpy mirror of `tables`, for packing a step's batch
        self.hashes: dict[int, list[int]] = {}                   # seq -> hash chain of full blocks
        self.cacheable: dict[int, bool] = {}
        self.roots: dict[int, int] = {}                          # seq -> salted root hash
        self.holes: dict[int, int] = {}                          # seq -> -1 entries in its table
        self.num_shared = 0                                      # blocks with ref count > 1
        self.prefix_hits = 0       # tokens served from the cache, cumulative
        self.prefix_queries = 0    # prompt tokens looked up, cumulative
        self.cow_copies = 0
        self.evictions = 0
        # Report cache: BlockInfo objects are immutable once published; only blocks touched since
        # the last report are rebuilt, so a report costs O(changed blocks), not O(pool).
        self._infos: list[BlockInfo | None] = [None] * num_blocks
        self._dirty: set[int] = set(range(num_blocks))

    # ---- sizes -------------------------------------------------------------------------------
    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    @property
    def num_available(self) -> int:
        """Blocks that can be handed out now: free ones plus evictable cached ones."""
        return len(self.free_list) + len(self.evictable)

    def table(self, seq_id: int) -> list[int]:
        return self.tables[seq_id]

    def has(self, seq_id: int) -> bool:
        return seq_id in self.tables

    def num_holes(self, seq_id: int) -> int:
        """Entries of the sequence's table freed by a sliding pattern (-1), kept as a count so
        the per-step checks need not scan the table."""
        return self.holes.get(seq_id, 0)

    @property
    def num_owned(self) -> int:
        """Physical blocks referenced by at least one live sequence."""
        return self.num_blocks - len(self.free_list) - len(self.evictable)

    # ---- prefix cache ------------------------------------------------------------------------
    @staticmethod
    def chain_hash(parent: int, tokens) -> int:
        return hash((parent, tuple(tokens)))

    @staticmethod
    def root_hash(salt: str = "") -> int:
        return hash((_ROOT_HASH, salt))

    def lookup_prefix(self, token_ids: list[int], salt: str = "") -> list[int]:
        """Physical blocks caching the longest prefix of token_ids made of full blocks, leaving at
        least one token to compute (a prompt cached up to a block boundary still needs logits)."""
        if not self.enable_prefix_caching:
            return []
        bs = self.block_size
        found: list[int] = []
        parent = self.root_hash(salt)
        for i in range((len(token_ids) - 1) // bs):
            toks = tuple(token_ids[i * bs:(i + 1) * bs])
            h = self.chain_hash(parent, toks)
            b = self.hash_to_block.get(h)
            if b is None or self.block_tokens[b] != toks:
                break
            found.append(b)
            parent = h
        return found

    def blocks_needed_to_admit(self, token_ids: list[int], num_tokens: int, cacheable: bool,
                               salt: str = "") -> tuple[int, int]:
        """(new blocks needed, available blocks) to admit a sequence and cover num_tokens slots.
        Cached blocks that are evictable count as unavailable once we take them."""
        hit = self.lookup_prefix(token_ids, salt) if cacheable else []
        num_tokens = max(num_tokens, len(hit) * self.block_size)
        taken_from_pool = sum(1 for b in hit if self.ref_count[b] == 0)
        return self.blocks_for(num_tokens) - len(hit), self.num_available - taken_from_pool

    def admit(self, seq_id: int, token_ids: list[int], cacheable: bool = True, salt: str = "") -> int:
        """Create the sequence's table, sharing its cached prefix; returns tokens served by cache."""
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id} already has a block table")
        cacheable = cacheable and self.enable_prefix_caching
        hit = self.lookup_prefix(token_ids, salt) if cacheable else []
        self.roots[seq_id] = self.root_hash(salt)
        self.tables[seq_id] = []
        self.holes[seq_id] = 0
        self.hashes[seq_id] = []
        self.cacheable[seq_id] = cacheable
        for b in hit:
            self._incref(b, seq_id)
            self.tables[seq_id].append(b)
            self.hashes[seq_id].append(self.block_hash[b])
        self.rows.add(seq_id, self.tables[seq_id])
        if cacheable:
            self.prefix_queries += len(token_ids)
            self.prefix_hits += len(hit) * self.block_size
        return len(hit) * self.block_size

    def has_uncommitted(self, seq_id: int, num_computed: int) -> bool:
        """Whether `commit` has a newly full block to hash (cheap: lets callers skip building
        the token list)."""
        return (bool(self.cacheable.get(seq_id)) and len(self.hashes[seq_id])
                < min(num_computed // self.block_size, len(self.tables[seq_id])))

    def commit(self, seq_id: int, token_ids: list[int], num_computed: int) -> None:
        """Register the hashes of blocks that became full (their K/V is written) in the cache."""
        if not self.cacheable.get(seq_id):
            return
        table, chain, bs = self.tables[seq_id], self.hashes[seq_id], self.block_size
        for i in range(len(chain), min(num_computed // bs, len(table))):
            b = table[i]
            toks = tuple(token_ids[i * bs:(i + 1) * bs])
            h = self.chain_hash(chain[-1] if chain else self.roots[seq_id], toks)
            chain.append(h)
            if b >= 0 and h not in self.hash_to_block and self.block_hash[b] is None:
                self._dirty.add(b)
                self.block_hash[b] = h
                self.block_tokens[b] = toks
                self.hash_to_block[h] = b

    # ---- growth, writes, forks ---------------------------------------------------------------
    def blocks_needed(self, seq_id: int, start: int, end: int) -> int:
        """New blocks (growth + copy-on-write) needed to write positions [start, end)."""
        table, rc = self.tables[seq_id], self.ref_count
        n = -(-end // self.block_size)
        need = n - len(table) if n > len(table) else 0
        for i in range(start // self.block_size, min(len(table), n)):   # copy-on-write
            b = table[i]
            if b >= 0 and rc[b] > 1:
                need += 1
        return need

    def prepare_write(self, seq_id: int, start: int, end: int) -> list[tuple[int, int]]:
        """Make positions [start, end) writable for seq_id: grow the table and copy shared blocks.
        Returns (src, dst) physical block pairs the caller must copy in the KV pool, in order.
        Raises NoFreeBlocksError when short (check `blocks_needed` first to avoid partial work)."""
        if self.blocks_needed(seq_id, start, end) > self.num_available:
            raise NoFreeBlocksError(f"sequence {seq_id} needs {self.blocks_needed(seq_id, start, end)} "
                                    f"blocks, {self.num_available} available")
        table = self.tables[seq_id]
        n = -(-end // self.block_size)
        copies = []
        for i in range(start // self.block_size, min(len(table), n)):
            b = table[i]
            if b >= 0 and self.ref_count[b] > 1:
                nb = self._alloc()
                self._incref(nb, seq_id)
                self._decref(b, seq_id)
                table[i] = nb
                self.rows.set(seq_id, i, nb)
                copies.append((b, nb))
                self.cow_copies += 1
        while len(table) < n:
            nb = self._alloc()
            self._incref(nb, seq_id)
            self.rows.set(seq_id, len(table), nb)
            table.append(nb)
        return copies

    def fork(self, parent_id: int, child_id: int) -> None:
        """The child shares every block of the parent (ref counts go up; no copy yet)."""
        if child_id in self.tables:
            raise ValueError(f"sequence {child_id} already has a block table")
        self.tables[child_id] = list(self.tables[parent_id])
        self.hashes[child_id] = list(self.hashes[parent_id])
        self.cacheable[child_id] = self.cacheable[parent_id]
        self.roots[child_id] = self.roots[parent_id]
        self.holes[child_id] = self.holes.get(parent_id, 0)
        self.rows.add(child_id, self.tables[child_id])
        for b in self.tables[child_id]:
            if b >= 0:
                self._incref(b, child_id)

    def slot_mapping(self, seq_id: int, start: int, end: int) -> list[int]:
        table, bs = self.tables[seq_id], self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    # ---- freeing -----------------------------------------------------------------------------
    def free(self, seq_id: int) -> None:
        """Drop the sequence's table. Tail blocks are released first so that, among equally old
        cached blocks, a prompt's head (the likeliest shared prefix) is evicted last."""
        for b in reversed(self.tables.pop(seq_id)):
            if b >= 0:
                self._decref(b, seq_id)
        self.rows.drop(seq_id)
        self.hashes.pop(seq_id, None)
        self.cacheable.pop(seq_id, None)
        self.roots.pop(seq_id, None)
        self.holes.pop(seq_id, None)

    def free_logical(self, seq_id: int, logical_blocks) -> int:
        """Free blocks no future query of this sequence reads (sliding pattern): leave holes (-1)."""
        table, n = self.tables[seq_id], 0
        for i in logical_blocks:
            if 0 <= i < len(table) and table[i] >= 0:
                self._decref(table[i], seq_id)
                table[i] = -1
                self.rows.set(seq_id, i, -1)
                n += 1
        self.holes[seq_id] = self.holes.get(seq_id, 0) + n
        return n

    # ---- internals ---------------------------------------------------------------------------
    def _alloc(self) -> int:
        if self.free_list:
            return self.free_list.popleft()
        if self.evictable:
            b, _ = self.evictable.popitem(last=False)
            self._dirty.add(b)
            del self.hash_to_block[self.block_hash[b]]
            self.block_hash[b] = None
            self.block_tokens[b] = None
            self.evictions += 1
            return b
        raise NoFreeBlocksError("no free KV blocks")

    def _incref(self, b: int, seq_id: int) -> None:
        self._dirty.add(b)
        if self.ref_count[b] == 0:
            self.evictable.pop(b, None)
        elif self.ref_count[b] == 1:
            self.num_shared += 1
        self.ref_count[b] += 1
        self.owners[b].add(seq_id)

    def _decref(self, b: int, seq_id: int) -> None:
        self._dirty.add(b)
        self.ref_count[b] -= 1
        if self.ref_count[b] == 1:
            self.num_shared -= 1
        self.owners[b].discard(seq_id)
        if self.ref_count[b] == 0:
            if self.block_hash[b] is not None:
                self.evictable[b] = None          # most recently used at the end
            else:
                self.free_list.append(b)

    # ---- reports -----------------------------------------------------------------------------
    def state(self, b: int) -> str:
        if self.ref_count[b] == 0:
            return CACHED if self.block_hash[b] is not None else FREE
        return SHARED if self.ref_count[b] > 1 else USED

    def touch(self, blocks) -> None:
        """Mark blocks whose filled-token count changed (written this step) for the next report."""
        self._dirty.update(b for b in blocks if b >= 0)

    def touch_written(self, seq_id: int, start: int, end: int) -> None:
        """`touch` the blocks of seq_id holding positions [start, end)."""
        table, bs = self.tables[seq_id], self.block_size
        if end - start == 1:
            b = table[start // bs]
            if b >= 0:
                self._dirty.add(b)
        else:
            self.touch(table[start // bs:(end - 1) // bs + 1])

    def table_rows(self, seq_ids: list[int], width: int):
        """(B, width) int32 numpy array: the block tables of seq_ids, padded with -1."""
        return self.rows.gather(seq_ids, width)

    def block_infos(self, partial: dict[int, int]) -> list[BlockInfo]:
        """One BlockInfo per physical block. partial: block -> tokens written, for the blocks of
        live sequences that are not full (a sequence's tail); other owned blocks are full."""
        for b in self._dirty:
            ref = self.ref_count[b]
            if self.block_hash[b] is not None:
                n = self.block_size
            elif ref:
                n = partial.get(b, self.block_size)
            else:
                n = 0
            self._infos[b] = BlockInfo(block_id=b, state=self.state(b), ref_count=ref,
                                       owners=sorted(self.owners[b]), num_tokens=n)
        self._dirty.clear()
        return list(self._infos)

    def counts(self) -> dict[str, int]:
        c = {FREE: 0, CACHED: 0, USED: 0, SHARED: 0}
        for b in range(self.num_blocks):
            c[self.state(b)] += 1
        return c

    def check_invariants(self) -> None:
        """Raise AssertionError when the bookkeeping is inconsistent (used by the tests)."""
        member: dict[int, set[int]] = {}
        for sid, table in self.tables.items():
            for b in table:
                if b >= 0:
                    assert sid not in member.setdefault(b, set()), f"seq {sid} holds block {b} twice"
                    member[b].add(sid)
        for b in range(self.num_blocks):
            assert self.ref_count[b] == len(member.get(b, ())), f"block {b}: ref count != table membership"
            assert self.owners[b] == member.get(b, set()), f"block {b}: owners != table membership"
        free, evict = set(self.free_list), set(self.evictable)
        assert len(free) == len(self.free_list), "free list holds a block twice"
        assert not free & evict, "a block is both free and cached"
        for b in free | evict:
            assert self.ref_count[b] == 0, f"block {b} is free but referenced"
        for b in evict:
            assert self.block_hash[b] is not None and self.hash_to_block[self.block_hash[b]] == b
        idle = [b for b in range(self.num_blocks) if self.ref_count[b] == 0]
        assert set(idle) == free | evict, "an unreferenced block is neither free nor cached"
        c = self.counts()
        assert c[FREE] + c[CACHED] + c[USED] + c[SHARED] == self.num_blocks
        assert c[SHARED] == self.num_shared, "shared-block counter out of step"
        assert c[USED] + c[SHARED] == self.num_owned
        for sid, table in self.tables.items():
            assert self.holes.get(sid, 0) == table.count(-1), f"seq {sid}: hole counter out of step"
            row = self.rows.gather([sid], self.rows.width)[0]
            assert row[:len(table)].tolist() == table and (row[len(table):] == -1).all(), \
                f"seq {sid}: table row mirror out of step"
        assert set(self.rows.row_of) == set(self.tables), "table rows of dropped sequences kept"
