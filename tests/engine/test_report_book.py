"""Step reports kept at O(changes) (model/engine/report_book.py, the running totals of
model/engine/block_pool.py) equal reports rebuilt from scratch at every step: the live
sequences' reports (block tables, KV tokens, statuses, output lengths, in request order), every
block's state, owners and fill recounted from the tables and the sequences' progress, the bytes
in use, wasted and reserved. The workloads preempt, fork (n > 1, beams), copy on write, hit the
prefix cache, evict with sliding patterns and abort, with overlap on and off. A published
report never changes afterwards (the engine hands new objects for what changed)."""
from __future__ import annotations

import copy

import pytest

from llm_playground.model.engine.beam_search import BeamSearchParams
from llm_playground.model.engine.cache_report import sequence_reports
from llm_playground.model.engine.sampling_params import SamplingParams
from engine_helpers import brute_blocks, engine, prompts


def check_report(e, r) -> None:
    live = e._live_seqs()
    want = sequence_reports(e.bm, live)
    assert r.sequences[:len(live)] == want
    assert all(s.status == "finished" for s in r.sequences[len(live):])
    c = r.cache
    blocks = brute_blocks(e)
    if c.blocks:
        assert [(b.block_id, b.state, b.ref_count, b.owners, b.num_tokens) for b in c.blocks] == blocks
    owned = [x for x in blocks if x[2]]
    per_token = c.bytes_per_block // c.block_size
    assert c.kv_bytes_in_use == len(owned) * c.bytes_per_block
    assert c.kv_bytes_wasted == sum(c.block_size - x[4] for x in owned) * per_token
    assert c.reserved_bytes_equivalent == sum(
        min(len(s.prompt_ids) + s.params.max_tokens, e.max_model_len) for s in live) * per_token
    counts = {st: sum(1 for x in blocks if x[1] == st) for st in ("free", "cached", "used", "shared")}
    assert (c.num_free, c.num_cached, c.num_used, c.num_shared) == (
        counts["free"], counts["cached"], counts["used"], counts["shared"])


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
@pytest.mark.parametrize("report_blocks", [True, False], ids=["blocks", "totals"])
def test_incremental_reports_equal_reports_from_scratch_every_step(overlap, report_blocks):
    e = engine(num_blocks=22, block_size=4, max_num_batched_tokens=12, max_num_seqs=8,
               overlap=overlap, report_blocks=report_blocks)
    ps = prompts(12, 3, 26, seed=17)
    rids = []
    for i, p in enumerate(ps[:8]):
        rids.append(e.add_request(p, SamplingParams(max_tokens=4 + i, ignore_eos=i % 2 == 0,
                                                    n=2 if i % 3 == 0 else 1,
                                                    temperature=0.8 if i % 3 == 0 else 0.0,
                                                    seed=i)))
    e.add_request(ps[9], SamplingParams(max_tokens=10, ignore_eos=True), pattern="local:8")
    e.add_beam_request(ps[10][:6], BeamSearchParams(beam_width=2, max_tokens=4))
    e.add_request([], SamplingParams())                                     # refused at once
    published = []
    steps = 0
    while e.has_unfinished():
        if steps == 3:                            # request 0's first 2 blocks are cached by now
            e.add_request(ps[0][:8] + ps[8][:5], SamplingParams(max_tokens=6))
        if steps == 6:
            e.abort(rids[1])
        if steps == 9:
            e.add_request(ps[11], SamplingParams(max_tokens=5, n=3, temperature=1.0, seed=4))
        r = e.step()
        steps += 1
        check_report(e, r)
        published.append((r, copy.deepcopy(r.sequences), copy.deepcopy(r.cache)))
    assert steps < 2000
    for r, seqs, cache in published:             # nothing published was changed afterwards
        assert r.sequences == seqs and r.cache == cache
    assert published[-1][0].cache.preemptions > 0 and e.bm.cow_copies > 0
    assert e.bm.prefix_hits > 0 and e._book.reserved == 0 and not e._book.sequences()
    e.bm.check_invariants()                       # includes the running unfilled-slot total
