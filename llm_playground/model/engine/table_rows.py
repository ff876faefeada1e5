"""A dense int32 mirror of the block tables, so that a step packs its tables in one copy.

SequenceTables (model/engine/sequence_tables.py) owns the tables as Python lists and calls this
mirror on every change (a sequence admitted or forked, a block appended, replaced by a copy-on-write
copy or freed to a hole, a sequence dropped). Each live sequence has one row of a numpy array;
entries past the end of its table are -1. `gather` returns the rows of a step's sequences as a
(B, width) array with one fancy-indexing copy, instead of flattening B Python lists of up to
max_model_len / block_size ints each (about 1 ms per step at 256 sequences of a few hundred
tokens, measured with benchmarks/engine_overhead.py).
Rows and columns double when full. This module holds no policy: it only mirrors.

It also records which rows changed since the last `take_dirty`: the engine sends those rows
(whole) to the model runner's copy of the tables on the device (model/engine/device_batch.py),
so a step moves the rows that changed (a sequence admitted or forked, a block appended, copied
or freed), not every table of every sequence.
"""
from __future__ import annotations

import numpy as np


class TableRows:
    """One int32 row per live sequence mirroring its block table; -1 past its end."""

    def __init__(self, rows: int = 64, width: int = 64) -> None:
        self.arr = np.full((rows, width), -1, dtype=np.int32)     # (rows, width)
        self.row_of: dict[int, int] = {}
        self.free_rows = list(range(rows - 1, -1, -1))           # pop() gives the lowest row
        self.dirty: set[int] = set()                             # rows changed since take_dirty

    @property
    def width(self) -> int:
        """Columns allocated (the longest table fits)."""
        return self.arr.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, width) allocated."""
        return self.arr.shape

    def __len__(self) -> int:
        return len(self.row_of)

    def seq_ids(self) -> set[int]:
        """The sequences that have a row."""
        return set(self.row_of)

    def add(self, seq_id: int, table: list[int]) -> None:
        """A new sequence whose table is `table` (possibly empty)."""
        if seq_id in self.row_of:
            raise ValueError(f"sequence {seq_id} already has a table row")
        if not self.free_rows:
            rows = self.arr.shape[0]
            self.arr = np.concatenate([self.arr, np.full_like(self.arr, -1)])
            self.free_rows = list(range(2 * rows - 1, rows - 1, -1))
        row = self.free_rows.pop()
        self.row_of[seq_id] = row
        self.dirty.add(row)
        if table:
            self._fit(len(table))
            self.arr[row, :len(table)] = table

    def set(self, seq_id: int, index: int, block: int) -> None:
        """Entry `index` of the sequence's table is now `block` (-1 = a hole)."""
        self._fit(index + 1)
        row = self.row_of[seq_id]
        self.arr[row, index] = block
        self.dirty.add(row)

    def drop(self, seq_id: int) -> None:
        """The sequence is gone: its row is cleared to -1 and reused by a later `add`."""
        row = self.row_of.pop(seq_id)
        self.arr[row] = -1
        self.free_rows.append(row)

    def take_dirty(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows (K,) int32, their contents (K, width) int32) of the rows changed since the
        last call, whole (a dropped row reads -1); the record is cleared."""
        rows = np.fromiter(sorted(self.dirty), dtype=np.int32, count=len(self.dirty))
        self.dirty.clear()
        return rows, self.arr[rows]

    def mark_all_dirty(self) -> None:
        """Every live row counts as changed (the device copy may have missed updates: a step
        that failed part way); the next `take_dirty` returns them all."""
        self.dirty.update(self.row_of.values())

    def gather(self, seq_ids: list[int], width: int) -> np.ndarray:
        """(B, width) int32: the first `width` entries of each sequence's row (a copy)."""
        self._fit(width)
        return self.arr[[self.row_of[s] for s in seq_ids], :width]

    def _fit(self, width: int) -> None:
        if width > self.arr.shape[1]:
            new = max(width, 2 * self.arr.shape[1])
            grown = np.full((self.arr.shape[0], new), -1, dtype=np.int32)
            grown[:, :self.arr.shape[1]] = self.arr
            self.arr = grown
