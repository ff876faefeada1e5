"""Per-sequence block bookkeeping: each live sequence's block table and prefix-cache chain.

One `SequenceTables` owns, per live sequence (one record each):
- its block table (logical block -> physical block; -1 = a hole freed by a sliding pattern),
  and the count of those holes, so per-step checks need not scan the table,
- the hash chain of its full blocks registered so far, its salted root hash and whether it may
  use the prefix cache at all,
- its row of the dense numpy mirror of the tables (model/engine/table_rows.py). Every change of
  a table goes through this class, which updates the mirror in the same call.
It does not count references, allocate or free physical blocks (model/engine/block_pool.py), and
it does not hash tokens (model/engine/prefix_index.py): the block manager drives all three.
"""
from __future__ import annotations

import numpy as np

from llm_playground.model.engine.table_rows import TableRows


_NEVER = 1 << 62      # a token count no sequence reaches


class _SeqBlocks:
    """One sequence's record (plain slotted class: one is made per admission or fork)."""
    __slots__ = ("table", "chain", "root", "cacheable", "holes", "version", "next_full")

    def __init__(self, table: list[int], chain: list[int], root: int, cacheable: bool,
                 holes: int, version: int) -> None:
        self.table = table            # logical -> physical; -1 = hole
        self.chain = chain            # hashes of the first len(chain) full blocks
        self.root = root              # salted root of the chain
        self.cacheable = cacheable
        self.holes = holes            # entries of `table` equal to -1
        self.version = version        # changes whenever `table` does (unique over all tables)
        # Tokens written at which the next unhashed block is full: (len(chain) + 1) x block
        # size, or never (uncacheable); kept with `chain` so `has_uncommitted` is one compare.
        self.next_full = 0

    def set_next_full(self, block_size: int) -> None:
        """Recompute `next_full` after `chain` or `cacheable` changed."""
        self.next_full = (len(self.chain) + 1) * block_size if self.cacheable else _NEVER


class SequenceTables:
    """seq id -> block table, hash chain, root, cacheable flag and hole count, plus the mirror.

    The three reads made per sequence per step are the bound methods of a dict seq id -> table
    (the records' own lists), so they run without a Python frame:
    - `has(seq_id)`: whether the sequence has a table;
    - `table(seq_id)`: its table, the live list (read it, do not change it); KeyError if none;
    - `find_table(seq_id)`: the same, or None when it has none.
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._seqs: dict[int, _SeqBlocks] = {}
        self._tables: dict[int, list[int]] = {}      # seq id -> _seqs[seq id].table (same list)
        self._rows = TableRows()
        self._version = 0                            # last version handed out
        self.has = self._tables.__contains__
        self.table = self._tables.__getitem__
        self.find_table = self._tables.get
        self.tables_by_seq = self._tables            # the same dict, read only
        self.rows_by_seq = self._rows.row_of         # seq id -> mirror row, read only
        self.records = self._seqs                    # seq id -> _SeqBlocks, read only
        # (seq_id) -> its row of the mirror, and of the runner's copy of it on the device
        self.row_of = self._rows.row_of.__getitem__

    # ---- reads -------------------------------------------------------------------------------
    def num_holes(self, seq_id: int) -> int:
        """Entries of the sequence's table equal to -1 (0 for an unknown sequence)."""
        e = self._seqs.get(seq_id)
        return 0 if e is None else e.holes

    def snapshots(self, seq_ids) -> list[tuple[list[int], int]]:
        """Per sequence (a copy of its table, its hole count); ([], 0) when it has no table."""
        get = self._seqs.get
        return [([], 0) if e is None else (e.table[:], e.holes) for e in map(get, seq_ids)]

    def version(self, seq_id: int) -> int:
        """A number that changes whenever the sequence's table changes, never reused by another
        table (reports copy a table only when it moved on); -1 for an unknown sequence."""
        e = self._seqs.get(seq_id)
        return -1 if e is None else e.version

    def _bump(self) -> int:
        self._version += 1
        return self._version

    def is_cacheable(self, seq_id: int) -> bool:
        """Whether the sequence registers its full blocks in the prefix cache."""
        e = self._seqs.get(seq_id)
        return e is not None and e.cacheable

    def chain_len(self, seq_id: int) -> int:
        """How many of the sequence's full blocks are hashed."""
        return len(self._seqs[seq_id].chain)

    def chain_tail(self, seq_id: int) -> int:
        """The hash the next full block chains on: the last one's, or the salted root."""
        e = self._seqs[seq_id]
        return e.chain[-1] if e.chain else e.root

    def has_uncommitted(self, seq_id: int, num_computed: int) -> bool:
        """Whether a cacheable sequence with num_computed tokens written has full blocks not yet
        hashed, i.e. whether `BlockManager.commit` has work (False for an unknown or
        uncacheable sequence; cheap: lets callers skip building the token list)."""
        seqs = self._seqs
        if seq_id not in seqs:
            return False
        e = seqs[seq_id]
        # next_full <= num_computed  <=>  cacheable and len(chain) < num_computed // block_size
        return e.next_full <= num_computed and len(e.chain) < len(e.table)

    def gather(self, seq_ids: list[int], width: int) -> np.ndarray:
        """(B, width) int32 copy of the tables of seq_ids, padded with -1 (from the mirror)."""
        return self._rows.gather(seq_ids, width)

    def take_updates(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows (K,), contents (K, W)) of the mirror rows changed since the last call."""
        return self._rows.take_dirty()

    def resend_all(self) -> None:
        """The next `take_updates` returns every live row (a failed step: the device's copy
        may have missed the rows its plan carried)."""
        self._rows.mark_all_dirty()

    @property
    def mirror_shape(self) -> tuple[int, int]:
        """(rows, width) of the numpy mirror as allocated (it doubles when full)."""
        return self._rows.shape

    @property
    def num_mirror_rows(self) -> int:
        """Rows of the mirror in use (one per sequence with a table)."""
        return len(self._rows)

    # ---- changes -----------------------------------------------------------------------------
    def add(self, seq_id: int, blocks: list[int], chain: list[int], root: int,
            cacheable: bool) -> None:
        """A new sequence whose table starts as `blocks` (cached prefix; no holes) with `chain`
        their hashes. ValueError if it has a table already."""
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id} already has a block table")
        self._seqs[seq_id] = e = _SeqBlocks(blocks, chain, root, cacheable, 0, self._bump())
        e.set_next_full(self.block_size)
        self._tables[seq_id] = blocks
        self._rows.add(seq_id, blocks)

    def fork(self, parent_id: int, child_id: int) -> list[int]:
        """The child gets a copy of the parent's record; returns the child's table."""
        if child_id in self._seqs:
            raise ValueError(f"sequence {child_id} already has a block table")
        p = self._seqs[parent_id]
        self._seqs[child_id] = c = _SeqBlocks(list(p.table), list(p.chain), p.root, p.cacheable,
                                              p.holes, self._bump())
        c.set_next_full(self.block_size)
        self._tables[child_id] = c.table
        self._rows.add(child_id, c.table)
        return c.table

    def append(self, seq_id: int, block: int) -> None:
        """Grow the sequence's table by one block."""
        table = self._tables[seq_id]
        self._rows.set(seq_id, len(table), block)
        table.append(block)
        self._seqs[seq_id].version = self._bump()

    def replace(self, seq_id: int, index: int, block: int) -> None:
        """Entry `index` now maps to `block` (a copy-on-write copy; not a hole)."""
        self._tables[seq_id][index] = block
        self._rows.set(seq_id, index, block)
        self._seqs[seq_id].version = self._bump()

    def punch_hole(self, seq_id: int, index: int) -> None:
        """Entry `index` (a real block) becomes a hole, -1."""
        e = self._seqs[seq_id]
        e.table[index] = -1
        e.holes += 1
        e.version = self._bump()
        self._rows.set(seq_id, index, -1)

    def truncate(self, seq_id: int, n: int) -> list[int]:
        """Keep the sequence's first n table entries; returns the entries removed (in order)."""
        e = self._seqs[seq_id]
        tail = e.table[n:]
        if not tail:
            return []
        del e.table[n:]
        e.holes -= tail.count(-1)
        e.version = self._bump()
        for i in range(n, n + len(tail)):
            self._rows.set(seq_id, i, -1)
        return tail

    def extend_chain(self, seq_id: int, h: int) -> None:
        """The sequence's next full block hashes to h."""
        e = self._seqs[seq_id]
        e.chain.append(h)
        e.set_next_full(self.block_size)

    def drop(self, seq_id: int) -> list[int]:
        """Forget the sequence; returns its table (KeyError if none)."""
        e = self._seqs.pop(seq_id)
        del self._tables[seq_id]
        self._rows.drop(seq_id)
        return e.table

    # ---- checks ------------------------------------------------------------------------------
    def membership(self) -> dict[int, set[int]]:
        """block -> sequences whose table holds it; AssertionError if one holds a block twice."""
        member: dict[int, set[int]] = {}
        for sid, e in self._seqs.items():
            for b in e.table:
                if b >= 0:
                    assert sid not in member.setdefault(b, set()), f"seq {sid} holds block {b} twice"
                    member[b].add(sid)
        return member

    def check_invariants(self) -> None:
        """Raise AssertionError when a hole count or a mirror row is out of step."""
        for sid, e in self._seqs.items():
            assert e.holes == e.table.count(-1), f"seq {sid}: hole counter out of step"
            assert len(e.chain) <= len(e.table), f"seq {sid}: more hashes than blocks"
            assert e.next_full == ((len(e.chain) + 1) * self.block_size if e.cacheable
                                   else _NEVER), f"seq {sid}: next_full out of step"
            row = self._rows.gather([sid], self._rows.width)[0]
            assert row[:len(e.table)].tolist() == e.table and (row[len(e.table):] == -1).all(), \
                f"seq {sid}: table row mirror out of step"
        assert self._rows.seq_ids() == set(self._seqs), "table rows of dropped sequences kept"
        assert self._tables.keys() == self._seqs.keys() and all(
            self._tables[sid] is e.table for sid, e in self._seqs.items()), "table index out of step"
