"""Faults in the middle of a step: an exception inside the forward pass (or sampling), and a GPU
out-of-memory raised the same way, fail the requests of that step with FinishReason.ERROR and a
typed ErrorKind, free their blocks (none leaked, the block bookkeeping consistent), never cache
the K/V the failed step wrote, and leave the engine serving: requests outside the step and the
next ones give the tokens a fresh engine gives (the oracle). Faults are simulated by patching the
runner's network (forward) or its sampler, on the CPU."""
from __future__ import annotations

import pytest
import torch

from engine_helpers import engine, prompts, run_all
from llm_playground.model.engine import sampler
from llm_playground.model.engine.beam_search import BeamSearchParams
from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_tokens=8, ignore_eos=True)
P = prompts(4, 9, 30, seed=11)

FAULTS = {
    "runtime error": (lambda: RuntimeError("simulated kernel failure"), ErrorKind.INTERNAL),
    "cuda out of memory": (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                           ErrorKind.OUT_OF_MEMORY),
    "cpu out of memory": (lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried "
                                               "to allocate 17179869176 bytes"), ErrorKind.OUT_OF_MEMORY),
    "memory error": (lambda: MemoryError(), ErrorKind.OUT_OF_MEMORY),
}


class Fault:
    """Make `target.name` raise `make()` on the calls listed in `when` (0-based), then behave."""

    def __init__(self, monkeypatch, target, name, make, when=(0,)):
        self.real, self.make, self.when, self.calls = getattr(target, name), make, set(when), 0
        monkeypatch.setattr(target, name, self)

    def __call__(self, *args, **kwargs):
        n, self.calls = self.calls, self.calls + 1
        if n in self.when:
            raise self.make()
        return self.real(*args, **kwargs)


def _outputs(reports, rid):
    return [o for r in reports for o in r.outputs if o.request_id == rid]


def check_rerun_reuses_nothing(e, prompt) -> None:
    """After a failed step: the same prompt again finds no cached prefix and gets the tokens of
    a fresh engine."""
    hits = e.bm.prefix_hits
    again = e.add_request(prompt, GREEDY)
    ids, _ = run_all(e)
    assert e.bm.prefix_hits == hits                 # the second run found nothing to reuse
    assert ids[(again, 0)] == engine().generate(prompt, GREEDY)


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("where", ["forward", "sampling"])
def test_a_failed_step_fails_its_requests_and_the_engine_serves_on(monkeypatch, fault, where):
    make, kind = FAULTS[fault]
    e = engine(num_blocks=64, block_size=4, max_num_seqs=2)
    first, second, waiting = (e.add_request(p, GREEDY) for p in P[:3])  # the third waits (2 seqs)
    e.step()                                      # both running requests prefill
    e.step()                                      # and decode once
    if where == "forward":
        Fault(monkeypatch, e.runner.model, "forward", make)
    else:
        Fault(monkeypatch, sampler, "sample_ids", make)
    failed = e.step()
    for rid in (first, second):
        outs = _outputs([failed], rid)
        assert len(outs) == 1 and outs[0].finished and outs[0].finish_reason is FinishReason.ERROR
        assert outs[0].error_kind is kind and "\n" not in outs[0].error
        assert "the step failed on the device" in outs[0].error
    assert not e.requests.get(first) and not e.requests.get(second)
    e.bm.check_invariants()
    ids, reports = run_all(e)                     # the waiting request runs on, and a new one
    later = e.add_request(P[3], GREEDY)
    more, _ = run_all(e)
    assert ids[(waiting, 0)] == engine().generate(P[2], GREEDY)
    assert more[(later, 0)] == engine().generate(P[3], GREEDY)
    assert e.bm.num_owned == 0 and e.scheduler.running == [] and not e.has_unfinished()
    e.bm.check_invariants()


def test_kv_written_by_a_failed_step_is_never_cached(monkeypatch):
    """The fault comes after the forward wrote K/V and the engine committed the full blocks'
    hashes (sampling fails): those blocks must leave the prefix cache, or a later prompt would
    reuse K/V no finished step vouches for."""
    e = engine(num_blocks=64, block_size=4)
    prompt = P[1][:17]                              # 4 full blocks + 1 token
    Fault(monkeypatch, sampler, "sample_ids", lambda: RuntimeError("boom"))
    rid = e.add_request(prompt, GREEDY)
    report = e.step()                               # the whole prompt in one step, then the fault
    assert _outputs([report], rid)[-1].finish_reason is FinishReason.ERROR
    assert e.bm.prefix_index.entries() == {}        # nothing the step wrote is registered
    assert e.bm.counts()["cached"] == 0
    check_rerun_reuses_nothing(e, prompt)


def test_blocks_cached_before_the_failed_step_stay_cached(monkeypatch):
    e = engine(num_blocks=64, block_size=4)
    base = P[0][:12]
    e.generate(base + [1], GREEDY)                  # caches 3 full blocks of `base`
    cached = dict(e.bm.prefix_index.entries())
    assert len(cached) >= 3
    Fault(monkeypatch, e.runner.model, "forward", lambda: RuntimeError("boom"))
    rid = e.add_request(base + [7, 8, 9, 10, 11], GREEDY)   # hits the 3 blocks, then fails
    e.step()
    assert e.requests.get(rid) is None
    assert all(e.bm.prefix_index.block_for(h) == b for h, b in cached.items()
               if e.bm.block_hash(b) == h)
    assert e.bm.prefix_index.entries().items() >= {h: b for h, b in cached.items()}.items()


def test_every_sample_and_beam_of_a_failed_request_fails(monkeypatch):
    e = engine(num_blocks=128, block_size=4)
    n2 = e.add_request(P[0], SamplingParams(max_tokens=8, n=2, temperature=0.7, seed=3))
    beams = e.add_beam_request(P[1], BeamSearchParams(beam_width=3, max_tokens=6))
    e.step()
    e.step()                                        # forked and beamed by now
    Fault(monkeypatch, e.runner.model, "forward", lambda: torch.cuda.OutOfMemoryError("CUDA out of memory"))
    report = e.step()
    outs = _outputs([report], n2)
    assert sorted(o.sample_index for o in outs) == [0, 1]
    assert all(o.finish_reason is FinishReason.ERROR and o.error_kind is ErrorKind.OUT_OF_MEMORY for o in outs)
    beam_outs = _outputs([report], beams)
    assert beam_outs and all(o.finish_reason is FinishReason.ERROR for o in beam_outs)
    assert e.groups == {} and e.bm.num_owned == 0
    e.bm.check_invariants()
    assert e.beam_search(P[1], BeamSearchParams(beam_width=3, max_tokens=6))   # serves on


def test_repeated_faults_never_stop_the_engine(monkeypatch):
    e = engine(num_blocks=32, block_size=4)
    Fault(monkeypatch, e.runner.model, "forward", lambda: RuntimeError("flaky device"), when=range(0, 20, 2))
    results = []
    for p in P * 3:
        rid = e.add_request(p, SamplingParams(max_tokens=3, ignore_eos=True))
        _, reports = run_all(e)
        results.append(_outputs(reports, rid)[-1].finish_reason)
    assert FinishReason.ERROR in results and FinishReason.MAX_TOKENS in results
    assert e.bm.num_owned == 0
    e.bm.check_invariants()


@pytest.mark.parametrize("error,kind", [(MemoryError(), ErrorKind.OUT_OF_MEMORY),
                                        (torch.cuda.OutOfMemoryError("x"), ErrorKind.OUT_OF_MEMORY),
                                        (RuntimeError("CUDA error: out of memory"), ErrorKind.OUT_OF_MEMORY),
                                        (RuntimeError("CUDA error: device-side assert triggered"), ErrorKind.INTERNAL),
                                        (ValueError("bad shape"), ErrorKind.INTERNAL)])
def test_error_kind_of_an_exception(error, kind):
    assert ErrorKind.of_exception(error) is kind
