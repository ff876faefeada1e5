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
This module only reads, through the block manager's methods; it changes no state.
"""
from __future__ import annotations

from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.reports import CACHED, FREE, SHARED, USED, CacheReport, SequenceReport
from llm_playground.model.engine.sequence import Sequence, SeqStatus


def tail_fill(bm: BlockManager, seqs: list[Sequence]) -> dict[int, int]:
    """Tokens written in each live sequence's blocks that are not full (its tail: the block being
    filled and any allocated ahead). Every other owned block is full. A block shared by several
    sequences holds the same tokens for each (writes into shared blocks are copied first)."""
    partial: dict[int, int] = {}
    bs, find_table = bm.block_size, bm.find_table
    for s in seqs:
        table = find_table(s.seq_id)
        if table is None:
            continue
        for i in range(s.num_computed // bs, len(table)):
            b = table[i]
            if b >= 0:
                partial[b] = max(partial.get(b, 0), min(bs, max(0, s.num_computed - i * bs)))
    return partial


def sequence_reports(bm: BlockManager, seqs: list[Sequence]) -> list[SequenceReport]:
    """One SequenceReport per sequence: its block table (a copy) and the KV tokens it holds."""
    out = []
    bs = bm.block_size
    for s, (table, holes) in zip(seqs, bm.table_snapshots([s.seq_id for s in seqs])):
        kv = max(0, s.num_computed - holes * bs) if table else 0
        out.append(SequenceReport(s.seq_id, s.request_id, s.status.value, len(s.prompt_ids),
                                  len(s.output_ids), s.num_cached_tokens, table, kv))
    return out


def cache_report(bm: BlockManager, seqs: list[Sequence], bytes_per_block: int, max_model_len: int,
                 preemptions: int, with_blocks: bool = True) -> CacheReport:
    """with_blocks=False leaves `blocks` empty and computes the totals from the block manager's
    counters and the sequences' tail blocks (O(sequences) instead of O(pool)); the figures are
    the same."""
    partial = tail_fill(bm, seqs)
    bs = bm.block_size
    per_token = bytes_per_block // bs
    if with_blocks:
        blocks = bm.block_infos(partial)
        counts = {FREE: 0, CACHED: 0, USED: 0, SHARED: 0}
        for info in blocks:
            counts[info.state] += 1
        owned_fill = [info.num_tokens for info in blocks if info.state in (USED, SHARED)]
        num_owned = len(owned_fill)
        wasted_slots = sum(bs - n for n in owned_fill)
    else:
        # From the block manager's counters: every owned block is full except the tails.
        blocks = []
        num_owned = bm.num_owned
        counts = bm.state_counts()
        wasted_slots = bm.unfilled_slots(partial)
    finished = SeqStatus.FINISHED
    reserved_tokens = sum(min(len(s.prompt_ids) + s.params.max_tokens, max_model_len)
                          for s in seqs if s.status is not finished)
    return CacheReport(
        num_blocks=bm.num_blocks, block_size=bs, bytes_per_block=bytes_per_block,
        num_free=counts[FREE], num_cached=counts[CACHED], num_used=counts[USED],
        num_shared=counts[SHARED], blocks=blocks,
        kv_bytes_in_use=num_owned * bytes_per_block,
        kv_bytes_wasted=wasted_slots * per_token,
        reserved_bytes_equivalent=reserved_tokens * per_token,
        prefix_hits=bm.prefix_hits, prefix_queries=bm.prefix_queries, preemptions=preemptions)
