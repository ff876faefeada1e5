"""Faults with overlap scheduling (EngineConfig(overlap=True); the CPU runs the same one-step-late
path as a GPU). When the runner raises while two steps are in flight, out of `submit` of step
N+1 or out of `collect` of step N, the requests of both steps fail with FinishReason.ERROR
(step N's tokens are never emitted), the runner holds no step afterwards, no block leaks,
nothing either step wrote stays in the prefix cache, and the engine serves on: requests outside
both steps, and later ones, give the tokens of a fresh engine without overlap (the oracle).
Faults are simulated by patching the runner's network (forward), its sampler or its collect."""
from __future__ import annotations

import pytest
import torch

from engine_helpers import engine, prompts, run_all
from llm_playground.model.engine import sampler
from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams
from test_step_faults import GREEDY, Fault, _outputs, check_rerun_reuses_nothing

P = prompts(6, 9, 30, seed=12)


def _check_failed(report, rids, kind):
    for rid in rids:
        outs = _outputs([report], rid)                  # one per sample, each an error
        assert outs and len({o.sample_index for o in outs}) == len(outs)
        for o in outs:
            assert o.finished and o.finish_reason is FinishReason.ERROR and o.error_kind is kind
            assert "the step failed on the device" in o.error and "\n" not in o.error


def _check_clean(e):
    """Nothing in flight on either side, the block bookkeeping consistent, no pending token."""
    assert e._in_flight is None and e.runner.num_in_flight == 0
    e.bm.check_invariants()
    assert all(s.num_pending == 0 for s in e._live_seqs())


@pytest.mark.parametrize("where", ["forward", "sampling", "collect"])
def test_a_fault_with_two_steps_in_flight_fails_both_steps_requests(monkeypatch, where):
    """Step N (A, B and R prefill) is in flight; C arrives and prefills in step N+1 beside A's
    and B's first decodes (their input read from N's draws on the device); R (a repetition
    penalty: it waits for its id on the host) is in N only, C in N+1 only; D waits for room
    (max_num_seqs 4). A fault out of submit(N+1) (forward or sampling) or out of collect(N)
    fails A, B, R and C, and only them."""
    e = engine(num_blocks=64, block_size=4, max_num_seqs=4, overlap=True)
    a, b = (e.add_request(p, GREEDY) for p in P[:2])
    r = e.add_request(P[5], SamplingParams(max_tokens=8, ignore_eos=True, repetition_penalty=1.3))
    first = e.step()                                 # step N submitted, left in flight
    assert e._in_flight is not None and not first.outputs
    c = e.add_request(P[2], GREEDY)
    d = e.add_request(P[3], GREEDY)                  # no room: waits
    in_next = []
    real_submit = e.runner.submit
    monkeypatch.setattr(e.runner, "submit", lambda plan: (in_next.append(plan), real_submit(plan))[1])
    if where == "forward":
        Fault(monkeypatch, e.runner.model, "forward", lambda: RuntimeError("simulated kernel failure"))
    elif where == "sampling":
        Fault(monkeypatch, sampler, "sample_ids", lambda: torch.cuda.OutOfMemoryError("CUDA out of memory"))
    else:                                            # N+1 was submitted and is dropped too
        Fault(monkeypatch, e.runner, "collect", lambda: RuntimeError("CUDA error: an illegal memory access"))
    failed = e.step()
    (plan,) = in_next                                # step N+1: A and B decode, C prefills, not R
    assert sum(b.num_rows for b in plan.batches) == 3 and sum(b.num_decodes for b in plan.batches) == 2
    kind = ErrorKind.OUT_OF_MEMORY if where == "sampling" else ErrorKind.INTERNAL
    _check_failed(failed, (a, b, r, c), kind)
    for rid in (a, b, r, c):                         # step N's tokens were never applied
        assert [o.new_token_ids for o in _outputs([failed], rid)] == [[]]
        assert rid not in e.requests
    assert d in e.requests and not _outputs([failed], d)
    _check_clean(e)
    ids, _ = run_all(e)                              # D runs on, then a later request
    later = e.add_request(P[4], GREEDY)
    more, _ = run_all(e)
    assert ids[(d, 0)] == engine().generate(P[3], GREEDY)
    assert more[(later, 0)] == engine().generate(P[4], GREEDY)
    assert e.bm.num_owned == 0 and e.runner.num_in_flight == 0 and not e.has_unfinished()
    e.bm.check_invariants()


def test_requests_outside_both_steps_run_on_unchanged(monkeypatch):
    """The requests that survive a fault are those in neither step in flight: here the ones
    still waiting for room (max_num_seqs 2); each then equals its own run alone."""
    e = engine(num_blocks=64, block_size=4, max_num_seqs=2, overlap=True)
    running = [e.add_request(p, GREEDY) for p in P[:2]]
    waiting = [e.add_request(p, GREEDY) for p in P[2:5]]
    e.step()
    e.step()                                         # decoding, one step in flight
    assert e._in_flight is not None
    Fault(monkeypatch, e.runner.model, "forward", lambda: MemoryError())
    _check_failed(e.step(), running, ErrorKind.OUT_OF_MEMORY)
    _check_clean(e)
    ids, _ = run_all(e)
    for rid, p in zip(waiting, P[2:5]):
        assert ids[(rid, 0)] == engine().generate(p, GREEDY)
    assert e.bm.num_owned == 0


def test_kv_written_by_a_failed_in_flight_step_is_never_cached(monkeypatch):
    """Step N prefills a prompt of 4 full blocks and commits their hashes (their ids are all on
    the host) while it is in flight; the fault comes out of submit(N+1). Step N never finished:
    its blocks must leave the prefix cache, or a later prompt would reuse K/V nothing vouches for."""
    e = engine(num_blocks=64, block_size=4, overlap=True)
    prompt = next(p for p in P if len(p) >= 17)[:17]    # 4 full blocks + 1 token
    rid = e.add_request(prompt, GREEDY)
    e.step()                                         # prefill submitted, in flight
    assert e._in_flight is not None and len(e.bm.prefix_index.entries()) == 4   # committed
    Fault(monkeypatch, e.runner.model, "forward", lambda: RuntimeError("boom"))
    report = e.step()
    assert _outputs([report], rid)[-1].finish_reason is FinishReason.ERROR
    assert e.bm.prefix_index.entries() == {} and e.bm.counts()["cached"] == 0
    check_rerun_reuses_nothing(e, prompt)


def test_repeated_faults_under_overlap_never_stop_the_engine(monkeypatch):
    """A mixed workload (greedy, seeded sampling, n > 1, a repetition penalty, logprobs) with
    faults on three forward calls, each with steps in flight: every request ends, each that did
    not fail gives the ids of its run alone, and no block or step is left behind."""
    kinds = [GREEDY, SamplingParams(max_tokens=6, temperature=0.8, seed=3),
             SamplingParams(max_tokens=5, n=2, temperature=0.7, seed=4),
             SamplingParams(max_tokens=6, repetition_penalty=1.3),
             SamplingParams(max_tokens=6, logprobs=2, temperature=0.9, seed=6)]
    work = [(p, kinds[i % len(kinds)]) for i, p in enumerate(prompts(15, 4, 20, seed=13))]
    alone = [run_all(_with(engine(), p, sp))[0] for p, sp in work]    # before any fault: the
    e = engine(num_blocks=48, block_size=4, max_num_seqs=4, overlap=True)  # network is shared
    rids = [e.add_request(p, sp) for p, sp in work]
    Fault(monkeypatch, e.runner.model, "forward", lambda: RuntimeError("flaky device"), when=(3, 9, 16))
    ids, reports = run_all(e)
    reasons = {(o.request_id, o.sample_index): o.finish_reason for r in reports for o in r.outputs
               if o.finished}
    assert {rid for rid, _ in reasons} == set(rids)
    failed = {rid for (rid, _), why in reasons.items() if why is FinishReason.ERROR}
    assert failed and failed != set(rids)
    for rid, (_, sp), want in zip(rids, work, alone):
        if rid not in failed:
            assert {j: ids.get((rid, j), []) for j in range(sp.n)} == {j: v for (_, j), v in want.items()}
    assert e.bm.num_owned == 0 and e.runner.num_in_flight == 0
    e.bm.check_invariants()


def _with(e, prompt, params):
    e.add_request(prompt, params)
    return e


def test_after_a_fault_the_next_plan_resends_every_live_table_row(monkeypatch):
    """A failed submit may have stopped before the device wrote the table rows its plan carried
    (an out-of-memory growing the device table), and those rows are never dirty again. So the
    plan after a fault carries every live sequence's row. Here P, a long prompt whose chunks get
    no budget while A's and B's four samples decode (max_num_batched_tokens 4), is in neither
    failed step: it survives with its row, which the next plan must carry although P's next
    chunk fits its last block (block_size 16: nothing else would dirty the row), and ends as
    alone."""
    e = engine(num_blocks=64, block_size=16, max_num_batched_tokens=4, overlap=True)
    sp = SamplingParams(max_tokens=8, n=2, temperature=0.8, seed=1, ignore_eos=True)
    long_prompt = P[0] + P[1] + P[2]
    a, b = e.add_request(P[3][:1], sp), e.add_request(P[4][:1], sp)
    p = e.add_request(long_prompt, GREEDY)
    plans = []
    real_submit = e.runner.submit
    monkeypatch.setattr(e.runner, "submit", lambda plan: (plans.append(plan), real_submit(plan))[1])
    Fault(monkeypatch, e.runner.model, "forward", lambda: RuntimeError("boom"), when=(3,))
    reports = [e.step() for _ in range(4)]          # the 4th call's forward raises
    seq_p = e.requests[p].seqs[0]
    row_p = e.bm.table_row(seq_p.seq_id)
    for plan in plans[2:4]:                         # the two failed steps: P got no chunk
        assert all(row_p not in b.seq_rows for b in plan.batches)
    _check_failed(reports[-1], (a, b), ErrorKind.INTERNAL)
    assert p in e.requests and 0 < seq_p.num_computed < len(long_prompt)
    e.step()
    live = {e.bm.table_row(s.seq_id) for s in e._live_seqs() if e.bm.has(s.seq_id)}
    assert row_p in live and live <= set(plans[4].table_rows.tolist())
    ids, _ = run_all(e)
    assert ids[(p, 0)] == engine().generate(long_prompt, GREEDY)
    assert e.bm.num_owned == 0 and e.runner.num_in_flight == 0
