"""Engine request handling: bad input finishes one request with a clear error while the others go
on; stop rules (EOS / stop ids, stop strings held back and cut, max tokens); streamed text equals
the tokenizer's decode of the ids; abort frees blocks; patterns free blocks and leave holes."""
from __future__ import annotations

import pytest

from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams
from engine_helpers import brute_blocks, engine, prompts, run_all

# Overlap scheduling applies a step's ids one call late (EngineConfig.overlap): the report tests
# below run both ways, and say where a report comes one call later with it on.
OVERLAP = pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])

P = prompts(3, 5, 20, seed=3)
GREEDY = SamplingParams(max_tokens=16, ignore_eos=True)


def collect(e):
    outs = {}
    for r in run_all(e)[1]:
        for o in r.outputs:
            outs.setdefault(o.request_id, []).append(o)
    return outs


def test_bad_requests_error_and_the_engine_keeps_serving():
    e = engine(num_blocks=8, block_size=4, max_model_len=40)
    good_alone = engine().generate(P[0], GREEDY)
    good = e.add_request(P[0], GREEDY)
    bad = {
        "empty": e.add_request([], GREEDY),
        "context": e.add_request(list(range(40)), GREEDY),
        "cache": engine(num_blocks=4, block_size=4).add_request(list(range(20)), GREEDY),
        "vocab": e.add_request([1, 2, 99999], GREEDY),
        "pattern": e.add_request([1, 2], GREEDY, pattern="nonsense:3"),
    }
    outs = collect(e)
    assert sum((o.new_token_ids for o in outs[good]), []) == good_alone
    for what, rid in bad.items():
        if what == "cache":
            continue
        last = outs[rid][-1]
        assert last.finished and last.finish_reason is FinishReason.ERROR and "\n" not in last.error, what
        assert not sum((o.new_token_ids for o in outs[rid]), [])
    assert "empty" in outs[bad["empty"]][-1].error
    assert "context" in outs[bad["context"]][-1].error
    assert "outside the vocabulary" in outs[bad["vocab"]][-1].error
    assert "nonsense" in outs[bad["pattern"]][-1].error
    small = engine(num_blocks=4, block_size=4)
    rid = small.add_request(list(range(20)), GREEDY)
    err = collect(small)[rid][-1].error
    assert "whole KV cache" in err


def test_streamed_text_equals_decode_and_lengths_stop():
    e = engine()
    tok = e.tokenizer
    rid = e.add_request(P[1], GREEDY)
    outs = collect(e)[rid]
    ids = sum((o.new_token_ids for o in outs), [])
    assert len(ids) == 16 and outs[-1].finish_reason is FinishReason.MAX_TOKENS
    assert "".join(o.text_delta for o in outs) == tok.decode(ids)


def test_stop_token_and_stop_string():
    full = engine().generate(P[2], GREEDY)
    tok = engine().tokenizer
    # stop id: the 4th generated token ends the request, included in the ids
    e = engine()
    rid = e.add_request(P[2], SamplingParams(max_tokens=16, ignore_eos=True, stop_token_ids=(full[3],)))
    outs = collect(e)[rid]
    ids = sum((o.new_token_ids for o in outs), [])
    assert ids == full[:full.index(full[3]) + 1] and outs[-1].finish_reason is FinishReason.END_OF_SEQUENCE
    # stop string: a piece of the full text from its middle; output is the text before it
    text = tok.decode(full)
    stop = text[5:8]
    e = engine()
    rid = e.add_request(P[2], SamplingParams(max_tokens=16, ignore_eos=True, stop=(stop, "\x00never")))
    outs = collect(e)[rid]
    streamed = "".join(o.text_delta for o in outs)
    assert streamed == text[:text.index(stop)]
    assert outs[-1].finish_reason is FinishReason.STOP_STRING
    # text is never released and then taken back: every prefix of the stream is a prefix of it
    acc = ""
    for o in outs:
        acc += o.text_delta
        assert streamed.startswith(acc)


def test_abort_frees_blocks_and_reports():
    e = engine(num_blocks=32, block_size=4, enable_prefix_caching=False)
    rid = e.add_request(P[0], SamplingParams(max_tokens=100, ignore_eos=True))
    other = e.add_request(P[1], GREEDY)
    e.step()
    e.step()
    assert e.cache_report().num_used > 0
    e.abort(rid)
    outs = collect(e)
    assert outs[rid][-1].finish_reason is FinishReason.ABORTED
    assert outs[other][-1].finish_reason is FinishReason.MAX_TOKENS
    c = e.cache_report()
    assert c.num_used == 0 and c.num_free == 32


def test_streaming_pattern_runs_past_the_cache_with_holes():
    # 6 blocks x 4 = 24 slots; streaming 4 sinks + window 8 generates 60 tokens past that.
    e = engine(num_blocks=6, block_size=4, enable_prefix_caching=False)
    rid = e.add_request(P[0], SamplingParams(max_tokens=60, ignore_eos=True), pattern="streaming:4,8")
    holes_seen = False
    for r in run_all(e)[1]:
        for s in r.sequences:
            holes_seen |= -1 in s.block_table
            assert sum(1 for b in s.block_table if b >= 0) <= 6
        for o in r.outputs:
            assert o.error is None
    assert holes_seen and rid not in e.requests
    c = e.cache_report()
    assert c.num_used == 0 and c.num_free == 6


@OVERLAP
def test_reports_account_for_blocks_and_waste(overlap):
    e = engine(num_blocks=64, block_size=4, overlap=overlap)
    e.add_request(list(range(10)), SamplingParams(max_tokens=5, ignore_eos=True))
    r = e.step()
    c = r.cache
    assert c.num_free + c.num_cached + c.num_used + c.num_shared == 64
    assert c.num_used == 3 and c.kv_bytes_in_use == 3 * c.bytes_per_block
    assert c.kv_bytes_wasted == 2 * c.bytes_per_block // 4        # 12 slots, 10 written
    assert c.reserved_bytes_equivalent == 15 * c.bytes_per_block // 4
    assert r.num_prefill_tokens == 10 and len(r.ttft_s) == (0 if overlap else 1)
    if overlap:                    # the first token lands in the next call, beside the decode
        r2 = e.step()
        assert len(r2.ttft_s) == 1 and [len(o.new_token_ids) for o in r2.outputs] == [1]
        assert r2.num_decode_tokens == 1 and r2.cache.num_used == 3
    assert sorted(r.sequences[0].block_table) == [b.block_id for b in c.blocks if b.state == "used"]
    assert all(c.blocks[b].owners == [r.sequences[0].seq_id] for b in r.sequences[0].block_table)


def test_streaming_prompt_longer_than_the_context():
    e = engine(num_blocks=12, block_size=4, max_model_len=48, max_num_batched_tokens=32,
               enable_prefix_caching=False)
    seen = []
    real = e.runner.model.forward

    def spy(ids, batch, kv):
        seen.append(int(batch.positions.max()))
        return real(ids, batch, kv)

    e.runner.model.forward = spy
    try:
        rid = e.add_request(list(range(150)), SamplingParams(max_tokens=20, ignore_eos=True),
                            pattern="streaming:4,12")
        out = collect(e)[rid]
    finally:
        del e.runner.model.forward
    assert out[-1].finish_reason is FinishReason.MAX_TOKENS and out[-1].error is None
    assert len(sum((o.new_token_ids for o in out), [])) == 20
    assert max(seen) < 48
    # a dense prompt of the same length is refused with a clear message
    rid = e.add_request(list(range(150)), GREEDY)
    assert "context" in collect(e)[rid][-1].error


def test_streaming_prompt_longer_than_the_cache_prefills_in_chunks_that_fit():
    # Found in the UI (playground --kv-blocks 8, pattern streaming:4,64, a 430-token prompt):
    # the context (512) was no limit, so a running prefill's next chunk took the whole budget
    # and the request ended as "needs more than the whole KV cache" although its window fits.
    e = engine(num_blocks=8, block_size=4, max_num_batched_tokens=64, enable_prefix_caching=False)
    rid = e.add_request(list(range(150)), SamplingParams(max_tokens=20, ignore_eos=True),
                        pattern="streaming:4,8")
    ids, reports = run_all(e)
    out = [o for r in reports for o in r.outputs if o.request_id == rid]
    assert out[-1].error is None and out[-1].finish_reason is FinishReason.MAX_TOKENS
    assert len(ids[(rid, 0)]) == 20
    assert max(r.num_prefill_tokens for r in reports) <= 8 * 4   # each chunk fits the pool


def test_chunked_prefill_keeps_decodes_running_within_the_budget():
    e = engine(num_blocks=128, block_size=4, max_num_batched_tokens=16)
    short = [e.add_request(p, SamplingParams(max_tokens=30, ignore_eos=True)) for p in P]
    for _ in range(3):
        e.step()
    e.add_request(list(range(200)), SamplingParams(max_tokens=2, ignore_eos=True))   # a long prompt
    reports = run_all(e)[1]
    for r in reports:
        assert r.num_prefill_tokens + r.num_decode_tokens <= 16
    during = [r for r in reports if r.num_prefill_tokens][:8]
    assert len(during) == 8 and all(r.num_decode_tokens == len(short) for r in during)


def test_attention_weights_come_from_the_model_under_the_engine_pattern():
    import torch
    e = engine()
    e.set_pattern("local:3")
    w = torch.tensor(e.attention_weights(P[0], layer=1, head=2))
    want = e.runner.model.attention_probs(P[0], 1, 2, mask=e.pattern.spec)
    torch.testing.assert_close(w, want)
    assert bool((w[5, :3] == 0).all()) and torch.allclose(w.sum(-1), torch.ones(len(P[0])))


def test_cache_report_equals_a_from_scratch_recount():
    e = engine(num_blocks=20, block_size=4)
    ps = prompts(5, 6, 30, seed=9)
    for i, p in enumerate(ps):
        e.add_request(p, SamplingParams(max_tokens=12, ignore_eos=True, n=2 if i == 1 else 1))
    e.add_request(ps[0][:9] + [1, 2], SamplingParams(max_tokens=5, ignore_eos=True))
    states = set()
    while e.has_unfinished():
        e.step()
        c = e.cache_report()
        got = [(b.block_id, b.state, b.ref_count, b.owners, b.num_tokens) for b in c.blocks]
        assert got == brute_blocks(e)
        owned = [x for x in got if x[2]]
        assert c.kv_bytes_wasted == sum(4 - x[4] for x in owned) * c.bytes_per_block // 4
        states |= {x[1] for x in got}
        # The summary-only report (report_blocks=False) gives the same totals without the list.
        s = e._cache_report(with_blocks=False)
        assert s.blocks == []
        for name in ("num_free", "num_cached", "num_used", "num_shared", "kv_bytes_in_use",
                     "kv_bytes_wasted", "reserved_bytes_equivalent"):
            assert getattr(s, name) == getattr(c, name), name
    assert states == {"free", "cached", "used", "shared"} and c.preemptions > 0


def test_prefix_cache_is_per_attention_pattern():
    """Deeper layers' K/V depend on the mask: an atrous request must not reuse dense blocks."""
    p = prompts(1, 30, 30, seed=11)[0]
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    want_atrous = engine().generate(p, params, pattern="atrous:3")
    e = engine()
    e.generate(p, params)                                    # dense blocks cached
    hits = e.bm.prefix_hits
    assert e.generate(p, params, pattern="atrous:3") == want_atrous
    assert e.bm.prefix_hits == hits                          # no cross-pattern hit
    e.generate(p, params, pattern="atrous:3")
    assert e.bm.prefix_hits > hits                           # same pattern: hit


def test_without_chunking_a_long_prompt_is_not_starved_by_running_decodes():
    """Chunked prefill off, budget 16: a 60-token prompt arriving while decodes run every step
    must still run (whole, in one step beside the decodes) and give its alone-run tokens."""
    params = SamplingParams(max_tokens=40, ignore_eos=True)
    long_prompt = prompts(1, 60, 60, seed=21)[0]
    want = engine(num_blocks=128).generate(long_prompt, SamplingParams(max_tokens=4, ignore_eos=True))
    e = engine(num_blocks=128, enable_chunked_prefill=False, max_num_batched_tokens=16)
    for p in prompts(3, 5, 8, seed=22):
        e.add_request(p, params)
    e.step()
    rid = e.add_request(long_prompt, SamplingParams(max_tokens=4, ignore_eos=True))
    got, prefill_sizes = [], []
    for _ in range(30):
        r = e.step()
        prefill_sizes.append(r.num_prefill_tokens)
        got += [t for o in r.outputs if o.request_id == rid for t in o.new_token_ids]
        if len(got) == 4:
            break
    assert got == want
    assert 60 in prefill_sizes          # the whole prompt in one step, beside the decodes


@OVERLAP
def test_a_one_token_prefill_is_counted_as_prefill_not_decode(overlap):
    """A 1-token prompt, and a prompt served by the prefix cache but for its last token, still
    compute the prompt: the reports must count that token as prefill, and count as decode only
    the tokens after the first one (else `generate --json` says 0 prefill tokens and the Chat
    strip's decode tok/s includes the time to first token)."""
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    prompt = prompts(1, 9, 9, seed=31)[0]             # 2 full blocks of 4 + 1 token
    e = engine(overlap=overlap)
    e.generate(prompt, params)                        # caches the 2 full blocks
    for p, cached in (([prompt[0]], 0), (prompt, 8)):
        hits = e.bm.prefix_hits
        rid = e.add_request(p, params)
        _, reports = run_all(e)
        assert e.bm.prefix_hits - hits == cached          # tokens served by the cache
        assert sum(r.num_prefill_tokens for r in reports) == len(p) - cached
        assert sum(r.num_decode_tokens for r in reports) == params.max_tokens - 1
        at = next(i for i, r in enumerate(reports) if rid in r.ttft_s)
        first = reports[at - 1] if overlap else reports[at]    # the step that ran the prompt
        assert first.num_prefill_tokens == len(p) - cached and first.num_decode_tokens == 0


@OVERLAP
def test_a_request_that_ends_in_its_first_step_is_still_reported(overlap):
    """A request that finishes within one step (max_tokens=1, or a first sampled token that is
    EOS / a stop id) must be in that step's `sequences`, marked finished, with the blocks it held
    and the prompt tokens the prefix cache served, as they were before its blocks were freed (the
    Chat strip showed 0 KV blocks and 0 prefix hits for such a request)."""
    prompt = prompts(1, 10, 10, seed=41)[0]           # 2 full blocks of 4 + 2 tokens: 3 blocks
    e = engine(overlap=overlap)
    first = e.generate(prompt, SamplingParams(max_tokens=1))[0]   # also fills the prefix cache
    one_token = SamplingParams(max_tokens=1)
    stops_at_once = SamplingParams(max_tokens=16, stop_token_ids=(first,))
    for params, reason in ((one_token, FinishReason.MAX_TOKENS), (stops_at_once, FinishReason.END_OF_SEQUENCE)):
        rid = e.add_request(prompt, params)
        r = e.step()
        if overlap and params is stops_at_once:        # its first token lands one call late
            assert not r.outputs and e.has_unfinished()
            r = e.step()
        assert not e.has_unfinished()
        out = [o for o in r.outputs if o.request_id == rid]
        assert len(out) == 1 and out[0].finished and out[0].finish_reason is reason
        mine = [s for s in r.sequences if s.request_id == rid]
        assert len(mine) == 1, r.sequences
        s = mine[0]
        assert s.status == "finished" and s.prompt_len == 10 and s.output_len == 1
        assert s.num_cached_tokens == 8                   # the 2 full blocks came from the cache
        assert len(s.block_table) == 3 and all(b >= 0 for b in s.block_table)
        # K/V written for the whole prompt; with overlap a stop-id end was only known after the
        # next step had written its token's K/V too (that step's draw is dropped)
        late = overlap and params is stops_at_once
        assert s.kv_tokens == (11 if late else 10)
        # the pool after the step: nothing owned, the report's blocks are free or cached now
        assert r.cache.num_used == r.cache.num_shared == 0 and r.num_running == 0
        assert e.step().sequences == []                   # reported once, not again


@OVERLAP
def test_finished_and_aborted_sequences_are_reported_once_beside_the_live_ones(overlap):
    e = engine(overlap=overlap)
    p = prompts(2, 6, 6, seed=42)
    short = e.add_request(p[0], SamplingParams(max_tokens=2, ignore_eos=True))
    long = e.add_request(p[1], SamplingParams(max_tokens=20, ignore_eos=True))
    e.step()
    if overlap:                                       # the first tokens land one call late
        e.step()
    r = e.step()                                      # `short` ends here, `long` goes on
    status = {s.request_id: s.status for s in r.sequences}
    assert status == {short: "finished", long: "running"}
    assert [s.request_id for s in r.sequences][-1] == short     # live first, then finished
    e.abort(long)
    r = e.step()                                      # the abort's output and its last report
    assert [(s.request_id, s.status) for s in r.sequences] == [(long, "finished")]
    # 6 prompt + 1 output token written; with overlap the step in flight at the abort had
    # written the second output token's K/V too (its draw is dropped)
    assert r.sequences[0].output_len == 2
    assert r.sequences[0].kv_tokens == (8 if overlap else 7)
    assert len(r.sequences[0].block_table) == 2       # in blocks of 4
    assert any(o.request_id == long and o.finish_reason is FinishReason.ABORTED for o in r.outputs)
