"""The numbers a StepReport shows, kept current as sequences change: reports at O(changes).

`ReportBook` holds one published `SequenceReport` per live sequence, in one dict in the order
reports list them (grouped by request, in the order the requests came and their sequences were
made; re-sorted only after a fork joins a request that is not the newest), and the running sum
of the live sequences' reservations (cache_report.reserved_tokens).
The engine tells it what happened: a sequence was made (`added`), changed (`touched`: it ran,
got a token, was preempted, had blocks evicted) or ended (`released`). `sequences()` rebuilds
the reports of the sequences touched since the last call, copying a block table only when its
version moved on (the table records' `version`, read without a call per sequence), and returns
the list of every live one (benchmarks/host_cost.py counts the calls). So a report
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
        # seq id -> its published report (None until the first `sequences`), in report order:
        # requests as they came, each one's sequences as they were made.
        self._reports: dict[int, SequenceReport | None] = {}
        self._by_request: dict[int, list[int]] = {}        # serial -> its live seq ids, in order
        self._reorder = False        # a fork joined a request that is not the newest one
        self._dirty: dict[int, Sequence] = {}              # seq id -> sequence, changed
        self._versions: dict[int, int] = {}                # seq id -> table version reported
        # seq id -> its block-table record (.table, .holes, .version), read only
        self._records = bm.seq_tables.records

    def added(self, seq: Sequence) -> None:
        """A new live sequence (a request's first, or a fork)."""
        by_request = self._by_request
        if seq.serial in by_request:
            if next(reversed(by_request)) != seq.serial:
                self._reorder = True                       # not the newest request: re-sort
            by_request[seq.serial].append(seq.seq_id)
        else:
            by_request[seq.serial] = [seq.seq_id]
        self._reports[seq.seq_id] = None
        self.reserved += reserved_tokens(seq, self.max_model_len)
        self._dirty[seq.seq_id] = seq

    def touched(self, seq: Sequence) -> None:
        """`seq` changed (tokens, status, computed count or table): rebuild its report."""
        self._dirty[seq.seq_id] = seq

    def touched_all(self, seqs) -> None:
        """`touched` for each of `seqs` (one call for a step's sequences)."""
        dirty = self._dirty
        for seq in seqs:
            dirty[seq.seq_id] = seq

    def released(self, seq: Sequence) -> None:
        """`seq` ended (finished or dropped): it leaves the live reports."""
        sid = seq.seq_id
        if sid not in self._reports:
            return
        del self._reports[sid]
        sids = self._by_request[seq.serial]
        sids.remove(sid)
        if not sids:
            del self._by_request[seq.serial]
        self.reserved -= reserved_tokens(seq, self.max_model_len)
        self._dirty.pop(sid, None)
        self._versions.pop(sid, None)

    def sequences(self) -> list[SequenceReport]:
        """Every live sequence's report, the changed ones rebuilt."""
        bs, reports, records, versions = self.bm.block_size, self._reports, self._records, self._versions
        for sid, s in self._dirty.items():
            if sid not in reports:
                continue                                   # released meanwhile
            if sid in records:
                e = records[sid]
                old = reports[sid]
                if old is not None and sid in versions and versions[sid] == e.version:
                    block_table = old.block_table          # unchanged: share the copy
                else:
                    block_table = e.table[:]
                    versions[sid] = e.version
                kv = s.num_computed - e.holes * bs if e.table else 0
                if kv < 0:
                    kv = 0
            else:
                block_table, kv = [], 0
                versions.pop(sid, None)
            # status._value_: the enum's value without the `value` property's two calls
            reports[sid] = SequenceReport(sid, s.request_id, s.status._value_, len(s.prompt_ids),
                                          len(s.output_ids), s.num_cached_tokens, block_table, kv)
        self._dirty.clear()
        if self._reorder:
            self._reports = reports = {sid: reports[sid] for sids in self._by_request.values()
                                       for sid in sids}
            self._reorder = False
        return list(reports.values())
