"""Speculation with the engine's other features: each combination the issue names either works
(greedy output equal to speculation off, and the request did verify proposals) or is refused for
that request, which then decodes plainly in the same batch and whose output says why.

Works: n > 1 (each sample speculates once the prompt row has forked; greedy and seeded),
dense, atrous and sparse (local + atrous) patterns, prompt lookup with a repetition penalty.
Refused, with the reason in `RequestOutput.speculation_refused`: beam search, the sliding
patterns (local, streaming) and a draft model with a repetition penalty. Continuous batching
of speculating and plain rows, chunked prefill and preemption are test_speculation.py's mixed
and 300-request workloads; the draft's catch-up over them, test_spec_draft_catchup.py.

Also the per-sample counts (`RequestOutput.spec_proposed` / `spec_accepted`): exact, checked
against the per-token flags (`speculated`: accepted proposals) and the steps' totals.
Oracle: the same engine with speculation off.
"""
from __future__ import annotations

import pytest

from engine_helpers import run_all
from test_speculation import copying_prompts, spec_engine
from llm_playground.model.engine.beam_search import BeamSearchParams
from llm_playground.model.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)


def run_outputs(e):
    """{(request, sample): [RequestOutput, ...]} and the reports, stepping until idle."""
    outs: dict = {}
    reports = []
    while e.has_unfinished():
        r = e.step()
        reports.append(r)
        for o in r.outputs:
            assert o.error is None, o.error
            outs.setdefault((o.request_id, o.sample_index), []).append(o)
    e.bm.check_invariants()
    assert e.bm.num_owned == 0
    return outs, reports


def ids_of(outs) -> dict:
    return {key: [t for o in os for t in o.new_token_ids] for key, os in outs.items()}


def refusal(os) -> str | None:
    notes = [o.speculation_refused for o in os if o.speculation_refused]
    assert len(notes) <= 1, "a refusal is said once"
    return notes[0] if notes else None


def workload(e) -> dict:
    """Requests that speculate and requests that are refused, in one engine; {name: id}."""
    ps = copying_prompts(9, 6, 12, seed=53)
    rid = {}
    rid["plain"] = e.add_request(ps[0], GREEDY)
    rid["n3-greedy"] = e.add_request(ps[1], SamplingParams(max_tokens=12, n=3, ignore_eos=True))
    rid["atrous"] = e.add_request(ps[2], GREEDY, pattern="atrous:3")
    rid["sparse"] = e.add_request(ps[3], GREEDY, pattern="sparse:8,3")
    rid["penalty"] = e.add_request(ps[4], SamplingParams(max_tokens=12, ignore_eos=True,
                                                         repetition_penalty=1.05))
    rid["local"] = e.add_request(ps[5], GREEDY, pattern="local:8")
    rid["streaming"] = e.add_request(ps[6], GREEDY, pattern="streaming:2,8")
    rid["beam"] = e.add_beam_request(ps[7], BeamSearchParams(beam_width=2, max_tokens=6))
    rid["n2-seeded"] = e.add_request(ps[8], SamplingParams(max_tokens=12, n=2, temperature=0.8,
                                                           seed=5, ignore_eos=True))
    return rid


REFUSED = {"local": "sliding attention pattern local:8", "streaming": "sliding attention pattern",
           "beam": "beam search"}


@pytest.mark.parametrize("spec,draft", [("draft:tiny:4", "same"), ("draft:layers=1:3", None),
                                        ("ngram:3", None)])
def test_each_combination_speculates_or_says_why(spec, draft):
    off = spec_engine("off", None, num_blocks=200)
    on = spec_engine(spec, draft, num_blocks=200)
    rid = workload(off)
    assert workload(on) == rid
    want, _ = run_outputs(off)
    got, reports = run_outputs(on)
    name = {v: k for k, v in rid.items()}
    g_ids, w_ids = ids_of(got), ids_of(want)
    for key in w_ids:
        if name[key[0]] != "n2-seeded":          # sampled: another random stream
            assert g_ids[key] == w_ids[key], name[key[0]]
    refused_penalty = spec.startswith("draft")    # a draft model with a repetition penalty
    for key, os in got.items():
        what = name[key[0]]
        note = refusal(os)
        proposed = sum(o.spec_proposed for o in os)
        if what in REFUSED or (what == "penalty" and refused_penalty):
            want_text = REFUSED.get(what, "repetition penalty with a draft model")
            if what != "beam" or key[1] == 0:    # a beam search says it on its best beam
                assert note is not None and want_text in note, (what, note)
            assert proposed == 0, what
        else:
            assert note is None, (what, note)
            # a draft proposes at every step; prompt lookup only where its n-gram recurs
            if refused_penalty or what in ("plain", "penalty"):
                assert proposed > 0, f"{what} sample {key[1]} never verified"
    assert sum(r.spec_rows for r in reports) > 0
    assert all(refusal(os) is None for key, os in want.items()), "speculation off says nothing"


def test_per_sample_counts_are_exact():
    """Per sample, accepted proposals == its tokens flagged as accepted; summed over samples,
    proposed and accepted == the steps' totals."""
    e = spec_engine("draft:layers=1:3", None, num_blocks=200)
    workload(e)
    outs, reports = run_outputs(e)
    tot_p = tot_a = 0
    for key, os in outs.items():
        accepted = sum(o.spec_accepted for o in os)
        flagged = sum(sum(o.speculated or []) for o in os)
        assert accepted == flagged, key
        assert accepted <= sum(o.spec_proposed for o in os)
        tot_p += sum(o.spec_proposed for o in os)
        tot_a += accepted
    assert tot_p == sum(r.spec_proposed for r in reports) > 0
    assert tot_a == sum(r.spec_accepted for r in reports) > 0
    assert tot_a < tot_p, "a mostly rejected draft: the counts must tell the two apart"
    for r in reports:
        if r.spec_rows:
            assert r.spec_acceptance == r.spec_accepted / r.spec_proposed
            assert r.spec_tokens_per_row == 1 + r.spec_accepted / r.spec_rows
        else:
            assert r.spec_acceptance is None and r.spec_tokens_per_row is None
