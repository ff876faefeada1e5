"""Overlap scheduling (EngineConfig.overlap): the engine plans step N+1 before step N's ids reach
the host, and applies them one step late. The oracle is the engine with overlap off (the plain
plan, run, apply step) and each request run alone; the CPU runs the same one-step-late path as a
GPU (deferred input ids filled from the previous step's draws, stop rules applied late).

- a mixed workload (greedy, seeded sampling, n > 1, beams, repetition penalty, stop strings,
  stop ids, EOS, chunked prefill, prefix hits, a sliding pattern) gives the same ids, texts and
  finish reasons token for token with overlap on and off, in float32;
- no token past a stop is ever emitted (EOS, stop id, stop string, max_tokens, the context end,
  the KV cache end, an abort), although with overlap the device already drew one more;
- the preemption workload (300 requests, a tiny cache, n > 1, beams, aborts) ends with no block
  leaked and every request's output equal to that request run alone.
"""
from __future__ import annotations

import dataclasses
import random

import pytest

from llm_playground.model.engine.beam_search import BeamSearchParams
from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams
from engine_helpers import EOS, engine, prompts, run_all


class Outcome:
    """Everything a caller sees of one run: per (request, sample) the ids, text, finish reason,
    whether any output followed the finished one, and how the runner was driven."""

    def __init__(self, e, aborts: dict | None = None, max_steps: int = 20_000) -> None:
        self.ids: dict = {}
        self.text: dict = {}
        self.reason: dict = {}
        self.after_finish = 0
        self.deferred = 0
        real_submit = e.runner.submit

        def submit(plan):
            self.deferred += sum(len(b.deferred_tokens) for b in plan.batches)
            return real_submit(plan)

        e.runner.submit = submit
        aborts = aborts or {}
        self.reports = []
        for step in range(max_steps):
            for rid in aborts.get(step, ()):
                e.abort(rid)
            if not e.has_unfinished():
                break
            r = e.step()
            self.reports.append(r)
            for o in r.outputs:
                key = (o.request_id, o.sample_index)
                if key in self.reason:
                    self.after_finish += 1
                self.ids.setdefault(key, []).extend(o.new_token_ids)
                self.text[key] = self.text.get(key, "") + o.text_delta
                if o.finished:
                    self.reason[key] = o.finish_reason
        assert not e.has_unfinished(), "engine did not finish"
        e.bm.check_invariants()
        assert e.bm.num_owned == 0 and e.bm.seq_tables.num_mirror_rows == 0, "blocks leaked"
        assert e.runner.num_in_flight == 0


def streamed_text(p, params) -> str:
    """The text one request streams when it runs alone (overlap off)."""
    e = engine(num_blocks=400, block_size=4, overlap=False)
    e.add_request(p, params)
    return Outcome(e).text[(0, 0)]


_JOBS: list = []


def mixed_jobs():
    if _JOBS:
        return _JOBS
    ps = prompts(14, 3, 30, seed=5)
    greedy = SamplingParams(max_tokens=12)
    text = streamed_text(ps[5], SamplingParams(max_tokens=16))
    stop = (text[len(text) // 2],)                    # a character the stream releases mid-way
    _JOBS[:] = [
        (ps[0], greedy, None),
        (ps[1], SamplingParams(max_tokens=9, ignore_eos=True), None),
        (ps[2], SamplingParams(temperature=0.9, top_k=30, seed=3, max_tokens=10), None),
        (ps[3], SamplingParams(temperature=1.0, top_p=0.9, seed=8, n=3, max_tokens=8), None),
        (ps[4], SamplingParams(repetition_penalty=1.3, max_tokens=10), None),
        (ps[5], SamplingParams(stop=stop, max_tokens=16), None),
        (ps[6], SamplingParams(stop_token_ids=tuple(range(0, 256, 3)), max_tokens=16), None),
        (ps[7][:2], SamplingParams(max_tokens=1), None),
        (ps[8], SamplingParams(max_tokens=11, ignore_eos=True), "local:12"),
        (ps[0][:8] + ps[9], greedy, None),                          # shares 2 blocks with ps[0]
        (ps[10], SamplingParams(temperature=0.7, seed=1, n=2, max_tokens=7), None),
        (ps[11], SamplingParams(max_tokens=14, ignore_eos=True), "streaming:2,8"),
    ]
    return _JOBS


def run_mixed(overlap: bool, **cfg) -> tuple[Outcome, object]:
    e = engine(num_blocks=cfg.pop("num_blocks", 200), block_size=4, overlap=overlap, **cfg)
    for p, params, pattern in mixed_jobs():
        e.add_request(p, params, pattern=pattern)
    e.add_beam_request(prompts(1, 6, 6, seed=9)[0], BeamSearchParams(beam_width=3, max_tokens=6))
    return Outcome(e), e


@pytest.mark.parametrize("cfg", [dict(), dict(max_num_batched_tokens=7, max_num_seqs=6),
                                 dict(num_blocks=24, max_num_batched_tokens=16)],
                         ids=["roomy", "tiny-budget", "preempting"])
def test_overlap_on_equals_off_token_for_token(cfg):
    off, _ = run_mixed(False, **dict(cfg))
    on, e = run_mixed(True, **dict(cfg))
    assert on.ids == off.ids
    assert on.text == off.text
    assert on.reason == off.reason and len(on.reason) == len(off.ids)
    assert on.after_finish == off.after_finish == 0
    assert off.deferred == 0 and on.deferred > 0          # the late path ran
    reasons = set(on.reason.values())
    assert {FinishReason.STOP_STRING, FinishReason.END_OF_SEQUENCE, FinishReason.MAX_TOKENS} <= reasons
    assert e.discarded_rows > 0                # a row drawn past a stop was dropped, not emitted


def alone(p, params, pattern=None, beam=None):
    """{sample index: ids} of one request run alone in a roomy pool, overlap off."""
    e = engine(num_blocks=400, block_size=4, overlap=False)
    if beam is not None:
        return {i: h.token_ids for i, h in enumerate(e.beam_search(p, beam))}
    rid = e.add_request(p, params, pattern=pattern)
    got, _ = run_all(e)
    return {i: ids for (r, i), ids in got.items() if r == rid}


def test_no_token_past_a_stop_with_overlap():
    """Each way a sequence ends, with overlap on and the same request alone with it off: the
    same ids and reason, and nothing after the finished output."""
    p = prompts(1, 7, 7, seed=13)[0]
    e = engine(num_blocks=400, block_size=4, overlap=False)
    e.add_request(p, SamplingParams(max_tokens=24, ignore_eos=True))
    lone = Outcome(e)
    free, text = lone.ids[(0, 0)], lone.text[(0, 0)]
    stop_tok = free[5]
    stop_at = free.index(stop_tok)
    stop_str = text[len(text) // 2]                       # a character the stream does release
    cases = {
        "stop id": (SamplingParams(max_tokens=24, stop_token_ids=(stop_tok,), ignore_eos=True),
                    FinishReason.END_OF_SEQUENCE, free[:stop_at + 1]),
        "max tokens": (SamplingParams(max_tokens=9, ignore_eos=True), FinishReason.MAX_TOKENS,
                       free[:9]),
        "stop string": (SamplingParams(max_tokens=24, stop=(stop_str,), ignore_eos=True),
                        FinishReason.STOP_STRING, None),
        "eos": (SamplingParams(max_tokens=24, ignore_eos=False), None, None),
    }
    for name, (params, reason, want) in cases.items():
        ref = alone(p, params)[0]
        if want is not None:
            assert ref == want, name
        e = engine(num_blocks=64, block_size=4, overlap=True)
        e.add_request(p, params)
        e.add_request(prompts(1, 5, 5, seed=14)[0], SamplingParams(max_tokens=30, ignore_eos=True))
        out = Outcome(e)
        assert out.ids[(0, 0)] == ref and out.after_finish == 0, name
        if reason is not None:
            assert out.reason[(0, 0)] is reason, name
        assert len(out.ids[(0, 0)]) <= params.max_tokens
    # the context end (max_model_len) and the KV cache end, where the last token is still on
    # its way when the scheduler finds the next one has no room
    for cfg, reason in ((dict(max_model_len=12), FinishReason.CONTEXT_FULL),
                        (dict(num_blocks=3), FinishReason.KV_CACHE_FULL)):
        got = {}
        for overlap in (False, True):
            e = engine(block_size=4, overlap=overlap, **{"num_blocks": 64, **cfg})
            e.add_request(p, SamplingParams(max_tokens=30, ignore_eos=True))
            out = Outcome(e)
            assert out.reason[(0, 0)] is reason and out.after_finish == 0
            got[overlap] = out.ids[(0, 0)]
        assert got[True] == got[False] == free[:len(got[False])]
        # every slot of the context, or of the cache, is used (the last token needs none)
        used = len(p) + len(got[True]) - (reason is FinishReason.KV_CACHE_FULL)
        assert used == 12, reason


def test_an_abort_with_a_token_in_flight_emits_nothing_more():
    p = prompts(2, 6, 6, seed=21)
    ref = alone(p[0], SamplingParams(max_tokens=20, ignore_eos=True))[0]
    e = engine(num_blocks=64, block_size=4, overlap=True)
    rid = e.add_request(p[0], SamplingParams(max_tokens=20, ignore_eos=True))
    e.add_request(p[1], SamplingParams(max_tokens=20, ignore_eos=True))
    out = Outcome(e, aborts={4: [rid]})
    got = out.ids[(rid, 0)]
    assert out.reason[(rid, 0)] is FinishReason.ABORTED and out.after_finish == 0
    assert 0 < len(got) < 20 and got == ref[:len(got)]
    assert e.discarded_rows >= 1               # the row in flight at the abort was dropped


def _preemption_workload(n: int, seed: int):
    """n requests over a tiny cache: greedy with and without EOS, seeded n > 1 samples, beams,
    stop ids taken from the request's own greedy run; every 15th is aborted at some step."""
    rng = random.Random(seed)
    jobs, aborts = [], {}
    for i, p in enumerate(prompts(n, 2, 22, seed=seed)):
        kind = rng.random()
        if kind < 0.08:
            jobs.append((p, None, BeamSearchParams(beam_width=rng.randint(2, 3),
                                                   max_tokens=rng.randint(2, 6))))
            continue
        if kind < 0.3:
            params = SamplingParams(temperature=0.8, top_k=rng.choice([0, 20]), seed=1000 + i,
                                    n=rng.randint(2, 3), max_tokens=rng.randint(2, 10))
        elif kind < 0.4:
            free = alone(p, SamplingParams(max_tokens=12, ignore_eos=True))[0]
            params = SamplingParams(max_tokens=12, stop_token_ids=(free[rng.randint(0, 11)],))
        else:
            params = SamplingParams(max_tokens=rng.randint(1, 12), ignore_eos=rng.random() < 0.5)
        jobs.append((p, params, None))
        if i % 15 == 7:                             # (never a beam: its outputs come at the end)
            aborts.setdefault(rng.randint(0, 60), []).append(i)
    return jobs, aborts


def test_preemption_workload_with_overlap_leaks_nothing_and_equals_each_request_alone():
    jobs, aborts = _preemption_workload(300, seed=2)
    e = engine(num_blocks=24, block_size=4, max_num_batched_tokens=24, max_num_seqs=12,
               overlap=True)
    for i, (p, params, beam) in enumerate(jobs):
        rid = e.add_beam_request(p, beam) if beam is not None else e.add_request(p, params)
        assert rid == i
    out = Outcome(e, aborts=aborts)         # asserts: no leaked block, invariants hold
    assert out.reports[-1].cache.preemptions > 0 and e.bm.cow_copies > 0 and out.deferred > 0
    aborted = {rid for rids in aborts.values() for rid in rids}
    cut = 0
    for i, (p, params, beam) in enumerate(jobs):
        want = alone(p, params, beam=beam)
        got = {s: ids for (r, s), ids in out.ids.items() if r == i}
        reasons = {s: why for (r, s), why in out.reason.items() if r == i}
        if i in aborted and FinishReason.ABORTED in reasons.values():
            cut += 1
            for s, ids in got.items():              # what came before the abort, no more
                assert ids == want[s][:len(ids)], (i, s)
            continue
        assert got == want, (i, params, beam)
    assert cut > 0 and out.after_finish == 0
