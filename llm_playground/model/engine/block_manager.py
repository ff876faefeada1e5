"""Ownership of the paged KV cache's physical blocks: the one entry point for block bookkeeping.

The block manager decides which physical block holds which sequence's tokens. It drives three
parts, one concept each, and is the only code that changes them:
- `pool` (model/engine/block_pool.py): per physical block its ref count, owners, prefix-cache
  hash and tokens, plus the free list and the LRU of cached blocks;
- `seq_tables` (model/engine/sequence_tables.py): per sequence its block table (-1 = a hole
  freed by a sliding attention pattern), hash chain, root and hole count, with the numpy mirror;
- `prefix_index` (model/engine/prefix_index.py): hash -> block of every cached FULL block, the
  hash chain salted with the attention pattern, and the hit counters.
A freed block that carries a hash stays cached (state CACHED) and is reused by a later prompt
with the same prefix; when a fresh block is needed and the free list is empty, the least recently
freed cached block is evicted. Copy-on-write: before a sequence writes into a block it shares
with others (after `fork`), `prepare_write` gives it a private copy and returns (src, dst) pairs
that the engine copies in the KV pool (KVCache.copy_block).

The scheduler, the batch builder and the cache report read the state through this class's
methods and properties. It only does bookkeeping on ints: it never touches the KV tensors and
does not schedule.
"""
from __future__ import annotations

from llm_playground.model.engine.block_pool import BlockPool, NoFreeBlocksError
from llm_playground.model.engine.prefix_index import PrefixIndex
from llm_playground.model.engine.reports import BlockInfo
from llm_playground.model.engine.sequence_tables import SequenceTables

__all__ = ["BlockManager", "NoFreeBlocksError"]


class BlockManager:
    """Free list, ref counts, block tables, prefix cache and copy-on-write of a paged KV cache
    of `num_blocks` blocks of `block_size` tokens. The per-step reads `has`, `table`,
    `find_table`, `num_holes`, `table_snapshots`, `table_rows`, `has_uncommitted`, `ref_count`,
    `block_hash` and `state` are the bound methods of the part that owns the fact (set in
    __init__: one call instead of a forwarding method); `tables_by_seq` and `rows_by_seq` are
    the owners' dicts themselves (seq id -> table, -> mirror row), read only, for the batch
    builder's per-row subscripts (no call at all)."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"block manager needs num_blocks >= 1 and block_size >= 1 "
                             f"(got {num_blocks}, {block_size})")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks, block_size)
        self.seq_tables = SequenceTables(block_size)
        self.prefix_index = PrefixIndex(self.pool, block_size, enable_prefix_caching)
        self._cow_copies = 0
        # Reads made per sequence per step, bound straight to the part that owns the fact (one
        # call instead of a forwarding method; see each one's docstring):
        tables, pool = self.seq_tables, self.pool
        self.has = tables.has                  # (seq_id) -> bool: has a block table
        self.table = tables.table              # (seq_id) -> its table, live list, read only
        self.find_table = tables.find_table    # (seq_id) -> its table or None
        self.num_holes = tables.num_holes      # (seq_id) -> -1 entries of its table
        self.table_snapshots = tables.snapshots  # (seq_ids) -> [(table copy, holes)], ([], 0) if none
        self.table_rows = tables.gather        # (seq_ids, width) -> (B, width) int32, -1 padded
        self.table_row = tables.row_of         # (seq_id) -> its row of the mirror / device table
        self.table_version = tables.version    # (seq_id) -> changes whenever its table does
        self.take_table_updates = tables.take_updates   # () -> (rows, contents) changed since
        self.resend_table_rows = tables.resend_all     # () -> None: next updates carry every row
        self.has_uncommitted = tables.has_uncommitted   # (seq_id, num_computed) -> bool
        self.ref_count = pool.ref_count        # (block) -> sequences holding it
        self.block_hash = pool.hash_of         # (block) -> prefix-cache hash or None
        self.state = pool.state                # (block) -> FREE / CACHED / USED / SHARED
        # The same two facts as plain containers, for the per-sequence fast paths below
        # (a subscript instead of a call; read only, the parts stay their owners).
        self.tables_by_seq = tables.tables_by_seq   # seq id -> its table (the live lists)
        self.rows_by_seq = tables.rows_by_seq       # seq id -> its row of the mirror
        self._refs = pool.ref_counts                # block -> ref count

    # ---- sizes and reads ---------------------------------------------------------------------
    def blocks_for(self, num_tokens: int) -> int:
        """Blocks that hold num_tokens tokens."""
        return -(-num_tokens // self.block_size)

    @property
    def num_available(self) -> int:
        """Blocks that can be handed out now: free ones plus evictable cached ones."""
        return self.pool.num_available

    @property
    def num_owned(self) -> int:
        """Physical blocks referenced by at least one live sequence."""
        return self.pool.num_owned

    @property
    def num_shared(self) -> int:
        """Physical blocks referenced by more than one sequence."""
        return self.pool.num_shared

    @property
    def prefix_hits(self) -> int:
        """Prompt tokens served from the prefix cache, cumulative."""
        return self.prefix_index.prefix_hits

    @property
    def prefix_queries(self) -> int:
        """Prompt tokens looked up in the prefix cache, cumulative."""
        return self.prefix_index.prefix_queries

    @property
    def cow_copies(self) -> int:
        """Blocks copied on write, cumulative."""
        return self._cow_copies

    @property
    def evictions(self) -> int:
        """Cached blocks evicted to serve an allocation, cumulative."""
        return self.pool.evictions

    def writes_in_place(self, seq_id: int, pos: int) -> bool:
        """Whether position pos falls in a block the sequence already has and holds alone, so
        writing it needs no allocation and no copy (the scheduler's decode fast path)."""
        table = self.tables_by_seq[seq_id]
        i = pos // self.block_size
        return i < len(table) and table[i] >= 0 and self._refs[table[i]] == 1

    # ---- prefix cache ------------------------------------------------------------------------
    def lookup_prefix(self, token_ids: list[int], salt: str = "") -> list[int]:
        """Physical blocks caching the longest prefix of token_ids made of full blocks, leaving at
        least one token to compute (a prompt cached up to a block boundary still needs logits)."""
        return self.prefix_index.lookup(token_ids, salt)

    def blocks_needed_to_admit(self, token_ids: list[int], num_tokens: int, cacheable: bool,
                               salt: str = "") -> tuple[int, int]:
        """(new blocks needed, available blocks) to admit a sequence and cover num_tokens slots.
        Cached blocks that are evictable count as unavailable once we take them."""
        hit = self.lookup_prefix(token_ids, salt) if cacheable else []
        num_tokens = max(num_tokens, len(hit) * self.block_size)
        taken_from_pool = self.pool.num_unowned_in(hit)
        return self.blocks_for(num_tokens) - len(hit), self.num_available - taken_from_pool

    def admit(self, seq_id: int, token_ids: list[int], cacheable: bool = True, salt: str = "") -> int:
        """Create the sequence's table, sharing its cached prefix; returns tokens served by cache."""
        if self.seq_tables.has(seq_id):
            raise ValueError(f"sequence {seq_id} already has a block table")
        cacheable = cacheable and self.enable_prefix_caching
        hit = self.lookup_prefix(token_ids, salt) if cacheable else []
        pool = self.pool
        self.seq_tables.add(seq_id, list(hit), [pool.hash_of(b) for b in hit],
                            self.prefix_index.root_hash(salt), cacheable)
        for b in hit:
            pool.incref(b, seq_id)
        if cacheable:
            self.prefix_index.record_query(len(token_ids), len(hit) * self.block_size)
        return len(hit) * self.block_size

    def commit(self, seq_id: int, token_ids: list[int], num_computed: int) -> None:
        """Register the hashes of blocks that became full (their K/V is written) in the cache."""
        tables = self.seq_tables
        if not tables.is_cacheable(seq_id):
            return
        table, bs, index = tables.table(seq_id), self.block_size, self.prefix_index
        for i in range(tables.chain_len(seq_id), min(num_computed // bs, len(table))):
            b = table[i]
            toks = tuple(token_ids[i * bs:(i + 1) * bs])
            h = index.chain_hash(tables.chain_tail(seq_id), toks)
            tables.extend_chain(seq_id, h)
            if b >= 0:
                index.register(b, h, toks)

    # ---- growth, writes, forks ---------------------------------------------------------------
    def blocks_needed(self, seq_id: int, start: int, end: int) -> int:
        """New blocks (growth + copy-on-write) needed to write positions [start, end)."""
        table = self.seq_tables.table(seq_id)
        n = -(-end // self.block_size)
        need = n - len(table) if n > len(table) else 0
        return need + self.pool.num_shared_in(table, start // self.block_size, min(len(table), n))

    def prepare_write(self, seq_id: int, start: int, end: int) -> list[tuple[int, int]]:
        """Make positions [start, end) writable for seq_id: grow the table and copy shared blocks.
        Returns (src, dst) physical block pairs the caller must copy in the KV pool, in order.
        Raises NoFreeBlocksError when short (check `blocks_needed` first to avoid partial work)."""
        if self.blocks_needed(seq_id, start, end) > self.num_available:
            raise NoFreeBlocksError(f"sequence {seq_id} needs {self.blocks_needed(seq_id, start, end)} "
                                    f"blocks, {self.num_available} available")
        pool, tables = self.pool, self.seq_tables
        table = tables.table(seq_id)
        n = -(-end // self.block_size)
        copies = []
        for i in range(start // self.block_size, min(len(table), n)):
            b = table[i]
            if b >= 0 and pool.ref_count(b) > 1:
                nb = self._alloc()
                pool.incref(nb, seq_id)
                pool.decref(b, seq_id)
                tables.replace(seq_id, i, nb)
                pool.copy_fill(b, nb)
                copies.append((b, nb))
                self._cow_copies += 1
        while len(table) < n:
            nb = self._alloc()
            pool.incref(nb, seq_id)
            tables.append(seq_id, nb)
        return copies

    def fork(self, parent_id: int, child_id: int) -> None:
        """The child shares every block of the parent (ref counts go up; no copy yet)."""
        pool = self.pool
        for b in self.seq_tables.fork(parent_id, child_id):
            if b >= 0:
                pool.incref(b, child_id)

    def slot_mapping(self, seq_id: int, start: int, end: int) -> list[int]:
        """KV-pool slot of each position in [start, end) of the sequence."""
        table, bs = self.seq_tables.table(seq_id), self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    def discard_written(self, seq_id: int, start: int) -> None:
        """The K/V of positions `start` on of seq_id cannot be trusted (the step that wrote them
        failed): drop the prefix-cache entries of the blocks holding them, so that freeing the
        sequence returns those blocks to the free list, never to the cache. Blocks wholly before
        `start` were written by earlier steps and stay cached."""
        table = self.seq_tables.find_table(seq_id)
        if table is None:
            return
        index = self.prefix_index
        for b in table[start // self.block_size:]:
            if b >= 0 and self.pool.ref_count(b) == 1 and self.pool.hash_of(b) is not None:
                h = self.pool.clear_hash(b)
                if index.block_for(h) == b:
                    index.forget(h)

    def roll_back(self, seq_id: int, num_valid: int) -> None:
        """Speculation: only positions [0, num_valid) of seq_id hold accepted tokens. Blocks
        wholly past them are freed (the tail first; never hashed, since commits hash only ids
        known on the host) and the last kept block's fill drops to what it holds."""
        bs, pool = self.block_size, self.pool
        keep = self.blocks_for(num_valid)
        for b in reversed(self.seq_tables.truncate(seq_id, keep)):
            if b >= 0:
                assert pool.hash_of(b) is None, "a rejected speculation's block was hashed"
                pool.decref(b, seq_id)
        table = self.seq_tables.table(seq_id)
        if keep and table[keep - 1] >= 0 and pool.hash_of(table[keep - 1]) is None:
            pool.unfill_to(table[keep - 1], num_valid - (keep - 1) * bs)

    # ---- freeing -----------------------------------------------------------------------------
    def free(self, seq_id: int) -> None:
        """Drop the sequence's table. Tail blocks are released first so that, among equally old
        cached blocks, a prompt's head (the likeliest shared prefix) is evicted last."""
        pool = self.pool
        for b in reversed(self.seq_tables.drop(seq_id)):
            if b >= 0:
                pool.decref(b, seq_id)

    def free_logical(self, seq_id: int, logical_blocks) -> int:
        """Free blocks no future query of this sequence reads (sliding pattern): leave holes (-1)."""
        tables, pool = self.seq_tables, self.pool
        table, n = tables.table(seq_id), 0
        for i in logical_blocks:
            if 0 <= i < len(table) and table[i] >= 0:
                pool.decref(table[i], seq_id)
                tables.punch_hole(seq_id, i)
                n += 1
        return n

    def _alloc(self) -> int:
        b, evicted = self.pool.alloc()
        if evicted is not None:
            self.prefix_index.forget(evicted)
        return b

    # ---- reports -----------------------------------------------------------------------------
    def touch(self, blocks) -> None:
        """Mark blocks whose filled-token count changed (written this step) for the next report."""
        self.pool.touch_all(blocks)

    def touch_written(self, seq_id: int, start: int, end: int) -> None:
        """Positions [start, end) of seq_id are written this step: its blocks there hold that
        many more tokens (their BlockInfos are rebuilt at the next report)."""
        table, bs, fill_to = self.tables_by_seq[seq_id], self.block_size, self.pool.fill_to
        if end - start == 1:
            b = table[start // bs]
            if b >= 0:
                fill_to(b, start % bs + 1)
        else:
            for i in range(start // bs, (end - 1) // bs + 1):
                b = table[i]
                if b >= 0:
                    fill_to(b, min(bs, end - i * bs))

    def block_infos(self) -> list[BlockInfo]:
        """One BlockInfo per physical block (rebuilt for the blocks changed since the last call)."""
        return self.pool.block_infos()

    @property
    def unfilled_slots(self) -> int:
        """Slots of owned blocks not holding a token (a running total)."""
        return self.pool.unfilled_slots

    def counts(self) -> dict[str, int]:
        """Blocks per state, recounted over the whole pool (O(pool))."""
        return self.pool.counts()

    def state_counts(self) -> dict[str, int]:
        """Blocks per state from the running counters (O(1)); equals `counts()`."""
        return self.pool.state_counts()

    def check_invariants(self) -> None:
        """Raise AssertionError when the bookkeeping is inconsistent (used by the tests)."""
        self.pool.check_invariants(self.seq_tables.membership(), self.prefix_index.entries())
        self.seq_tables.check_invariants()
