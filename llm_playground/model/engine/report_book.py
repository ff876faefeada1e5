"""The numbers a StepReport shows, kept current as sequences change: reports at O(changes).

`ReportBook` holds one published `SequenceReport` per live sequence (grouped by request, in
the order the requests came and their sequences were made, which is the order reports list
them) and the running sum of the live sequences' reservations (cache_report.reserved_tokens).
The engine tells it what happened: a sequence was made (`added`), changed (`touched`: it ran,
got a token, was preempted, had blocks evicted) or ended (`released`). `sequences()` rebuilds
the reports of the sequences touched since the last call, copying a block table only when its
version moved on (SequenceTables.version), and returns the list of every live one. So a report
costs O(sequences that changed) in Python, plus one pointer per live sequence for the list,
instead of a copy of every table of every sequence, waiting ones included, every step.

Published SequenceReports and their tables are never changed afterwards (a changed sequence
gets a new object), so a report handed to another thread stays as it was. This module does not
decide anything: it only mirrors the sequences and the block manager; `reports_from_scratch`
in the tests checks it against a full rebuild at every step.
"""
from __future__ import annotations

from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.cache_report import reserved_tokens
from llm_playground.model.engine.reports import SequenceReport
from llm_playground.model.engine.sequence import Sequence


class ReportBook:
    """Live SequenceReports (rebuilt on change) and the reservation total."""

    def __init__(self, bm: BlockManager, max_model_len: int) -> None:
        self.bm = bm
        self.max_model_len = max_model_len
        self.reserved = 0                                  # tokens, over the live sequences
        self._by_request: dict[int, dict[int, SequenceReport | None]] = {}   # serial -> seq -> report
        self._dirty: dict[int, Sequence] = {}              # seq id -> sequence, changed
        self._versions: dict[int, int] = {}                # seq id -> table version reported

    def added(self, seq: Sequence) -> None:
        """A new live sequence (a request's first, or a fork)."""
        self._by_request.setdefault(seq.serial, {})[seq.seq_id] = None
        self.reserved += reserved_tokens(seq, self.max_model_len)
        self._dirty[seq.seq_id] = seq

    def touched(self, seq: Sequence) -> None:
        """`seq` changed (tokens, status, computed count or table): rebuild its report."""
        self._dirty[seq.seq_id] = seq

    def released(self, seq: Sequence) -> None:
        """`seq` ended (finished or dropped): it leaves the live reports."""
        by_seq = self._by_request.get(seq.serial)
        if by_seq is None or seq.seq_id not in by_seq:
            return
        del by_seq[seq.seq_id]
        if not by_seq:
            del self._by_request[seq.serial]
        self.reserved -= reserved_tokens(seq, self.max_model_len)
        self._dirty.pop(seq.seq_id, None)
        self._versions.pop(seq.seq_id, None)

    def sequences(self) -> list[SequenceReport]:
        """Every live sequence's report, the changed ones rebuilt."""
        bm, bs = self.bm, self.bm.block_size
        find_table, version, holes_of = bm.find_table, bm.table_version, bm.num_holes
        for sid, s in self._dirty.items():
            by_seq = self._by_request.get(s.serial)
            if by_seq is None or sid not in by_seq:
                continue                                   # released meanwhile
            old = by_seq[sid]
            table = find_table(sid)
            if table is None:
                block_table, kv = [], 0
                self._versions.pop(sid, None)
            else:
                v = version(sid)
                if old is not None and self._versions.get(sid) == v:
                    block_table = old.block_table          # unchanged: share the copy
                else:
                    block_table = table[:]
                    self._versions[sid] = v
                kv = max(0, s.num_computed - holes_of(sid) * bs) if table else 0
            by_seq[sid] = SequenceReport(sid, s.request_id, s.status.value, len(s.prompt_ids),
                                         len(s.output_ids), s.num_cached_tokens, block_table, kv)
        self._dirty.clear()
        return [r for by_seq in self._by_request.values() for r in by_seq.values()]
