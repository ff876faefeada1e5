"""Engine oracles on a tiny random float32 Llama: batching, preemption, prefix caching, chunked
prefill and forks all give the tokens of a plain greedy loop that recomputes the whole sequence
from scratch at every step (no engine, no scheduler, no shared cache)."""
from __future__ import annotations


from llm_playground.model.engine.sampling_params import SamplingParams
from engine_helpers import engine, prompts, reference_greedy, run_all

GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)


PROMPTS = prompts(6, 3, 40, seed=1)
EXPECTED = [reference_greedy(p, GREEDY.max_tokens) for p in PROMPTS]


def outputs(e, ps=PROMPTS, params=GREEDY):
    rids = [e.add_request(p, params) for p in ps]
    got, reports = run_all(e)
    return [got[(r, 0)] for r in rids], reports


def test_alone_equals_reference():
    for p, want in zip(PROMPTS[:2], EXPECTED[:2]):
        assert engine().generate(p, GREEDY) == want


def test_batched_sequences_of_different_lengths_equal_each_alone():
    got, reports = outputs(engine())
    assert got == EXPECTED
    mixed = [r for r in reports if r.num_prefill_tokens and r.num_decode_tokens]
    assert any(len(r.sequences) > 1 for r in reports)
    # staggered arrival so prefills and decodes share a step
    e = engine(max_num_batched_tokens=24)
    got, reports = outputs(e)
    assert got == EXPECTED
    assert any(r.num_prefill_tokens and r.num_decode_tokens for r in reports), mixed


def test_preempted_and_recomputed_sequences_equal_unpreempted():
    e = engine(num_blocks=16, block_size=4)      # 64 slots for 6 sequences of up to 52 tokens
    got, reports = outputs(e)
    assert reports[-1].cache.preemptions > 0
    assert got == EXPECTED
    assert e.bm.prefix_hits > 0          # resumed sequences reuse their own cached full blocks
    c = e.cache_report()
    assert c.num_used == c.num_shared == 0 and c.num_free + c.num_cached == 16


def test_prefix_caching_on_off_and_chunking_on_off_are_bit_identical():
    shared = PROMPTS[0] + PROMPTS[1]
    ps = [shared + p for p in PROMPTS[2:]] + [shared]
    want = [reference_greedy(p, GREEDY.max_tokens) for p in ps]
    for caching in (True, False):
        for chunked, budget in ((True, 7), (False, 4096)):
            e = engine(enable_prefix_caching=caching, enable_chunked_prefill=chunked,
                       max_num_batched_tokens=budget)
            e.generate(shared, GREEDY)             # warm the cache
            got, reports = outputs(e, ps)
            assert got == want, (caching, chunked)
            hits = reports[-1].cache.prefix_hits
            assert (hits > 0) == caching
            if caching:   # a prompt fully cached up to a block boundary still computes a token
                assert all(s.num_cached_tokens < s.prompt_len for r in reports for s in r.sequences)


def test_fork_equals_the_same_sequence_alone():
    # greedy: both samples equal the lone greedy run
    e = engine()
    rid = e.add_request(PROMPTS[2], SamplingParams(max_tokens=12, ignore_eos=True, n=2))
    got, reports = run_all(e)
    assert got[(rid, 0)] == got[(rid, 1)] == EXPECTED[2]
    assert any(r.cache.num_shared for r in reports)
    # seeded sampling: sample i of seed s equals a lone request with seed s + i
    params = SamplingParams(temperature=1.0, top_k=50, max_tokens=12, ignore_eos=True, seed=7, n=3)
    e = engine()
    rid = e.add_request(PROMPTS[3], params)
    got, _ = run_all(e)
    for i in range(3):
        lone = SamplingParams(temperature=1.0, top_k=50, max_tokens=12, ignore_eos=True, seed=7 + i)
        assert got[(rid, i)] == engine().generate(PROMPTS[3], lone)
    assert len({tuple(got[(rid, i)]) for i in range(3)}) > 1


def test_fork_shares_prompt_blocks_and_copies_the_last_one():
    e = engine(num_blocks=64, block_size=4)
    p = PROMPTS[2][:10]                         # 10 tokens: 2 full blocks + a partial one
    rid = e.add_request(p, SamplingParams(max_tokens=3, ignore_eos=True, n=4))
    first = e.step()                            # prefill + fork
    tables = [s.block_table for s in first.sequences]
    assert len(tables) == 4 and all(t == tables[0] for t in tables)
    assert first.cache.num_shared == 3
    second = e.step()                           # each writes position 10: copy-on-write
    tables = [s.block_table for s in second.sequences]
    assert len({t[0] for t in tables}) == 1 and len({t[2] for t in tables}) == 4
    assert e.bm.cow_copies == 3
    run_all(e)
    assert rid not in e.requests
