"""Build the plain-data `CacheReport` from the block manager and the live sequences.

Definitions (what the inspector and the benchmarks show):
- kv_bytes_in_use: blocks with at least one owner (USED or SHARED) x bytes per block; a shared
  block counts once, because it is stored once.
- kv_bytes_wasted: slots of those blocks not holding a token (K/V not written), in bytes. A block
  holds as many tokens as its fullest owner has computed in it.
- reserved_bytes_equivalent: what a contiguous cache that reserves each live sequence's maximum
  length up front would hold: min(prompt + max_tokens, max_model_len) tokens per sequence (each
  parallel sample its own copy, no sharing), x bytes per token. This is the reservation the seeds
  describe for pre-paging systems (reserve for the longest possible output).
These are kept as running totals (model/engine/block_pool.py counts the unfilled slots of owned
blocks as blocks are written, taken and freed; model/engine/report_book.py sums the
reservations as sequences come and go), so a report costs O(1) plus the BlockInfos of the
blocks that changed, not a walk over every sequence or block.
This module only reads, through the block manager's methods; it changes no state.
"""
from __future__ import annotations

from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.reports import FREE, CACHED, SHARED, USED, CacheReport, SequenceReport
from llm_playground.model.engine.sequence import Sequence


def sequence_reports(bm: BlockManager, seqs: list[Sequence]) -> list[SequenceReport]:
    """One SequenceReport per sequence, from scratch: its block table (a copy) and the KV
    tokens it holds (the engine keeps them current incrementally, report_book.py)."""
    out = []
    bs = bm.block_size
    for s, (table, holes) in zip(seqs, bm.table_snapshots([s.seq_id for s in seqs])):
        kv = max(0, s.num_computed - holes * bs) if table else 0
        out.append(SequenceReport(s.seq_id, s.request_id, s.status.value, len(s.prompt_ids),
                                  len(s.output_ids), s.num_cached_tokens, table, kv))
    return out


def reserved_tokens(seq: Sequence, max_model_len: int) -> int:
    """What a contiguous cache reserves for `seq` up front (its share of
    reserved_bytes_equivalent, in tokens)."""
    return min(len(seq.prompt_ids) + seq.params.max_tokens, max_model_len)


def cache_report(bm: BlockManager, bytes_per_block: int, reserved: int, preemptions: int,
                 with_blocks: bool = True) -> CacheReport:
    """The pool now. `reserved`: reserved_tokens summed over the live sequences. with_blocks=
    False leaves `blocks` empty (the totals are the same)."""
    bs = bm.block_size
    per_token = bytes_per_block // bs
    counts = bm.state_counts()
    return CacheReport(
        num_blocks=bm.num_blocks, block_size=bs, bytes_per_block=bytes_per_block,
        num_free=counts[FREE], num_cached=counts[CACHED], num_used=counts[USED],
        num_shared=counts[SHARED], blocks=bm.block_infos() if with_blocks else [],
        kv_bytes_in_use=bm.num_owned * bytes_per_block,
        kv_bytes_wasted=bm.unfilled_slots * per_token,
        reserved_bytes_equivalent=reserved * per_token,
        prefix_hits=bm.prefix_hits, prefix_queries=bm.prefix_queries, preemptions=preemptions)
