"""The draft model's catch-up is bounded by the step's token budget: after a long prompt, a
preemption (recompute) or chunked prefill, no draft forward is larger than the budget, the
draft catches up over several steps, and the output is the output without speculation.

Oracles: the same engine with speculation off (greedy ids, float32); every draft forward's
token count, recorded by a wrapper around the draft network; and, with the target's own
weights as the draft (`same`), every proposal accepted, which only holds if the draft's own
cache was filled at every position before it proposed (a position it skipped would hold
stale K/V and its proposals would part from the target's).
"""
from __future__ import annotations

import pytest

from engine_helpers import prompts, run_all
from test_speculation import run_checked, spec_engine
from llm_playground.model.engine.sampling_params import SamplingParams


class CountingDraft:
    """The draft network, recording how many tokens each of its forwards takes."""

    def __init__(self, model) -> None:
        self.model = model
        self.sizes: list[int] = []

    def __call__(self, input_ids, batch, kv):
        self.sizes.append(int(input_ids.shape[0]))
        return self.model(input_ids, batch, kv)

    def compute_logits(self, hidden):
        return self.model.compute_logits(hidden)


def run_both(ps, params, spec, draft, **cfg):
    off = spec_engine("off", None, **cfg)
    on = spec_engine(spec, draft, **cfg)
    counter = on.runner.draft.model = CountingDraft(on.runner.draft.model)
    for p in ps:
        off.add_request(p, params)
        on.add_request(p, params)
    want, _ = run_all(off)
    got, reports = run_checked(on)
    return want, got, reports, counter.sizes


@pytest.mark.parametrize("draft", ["same", "other"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "whole-prompt"])
def test_long_prompt_draft_forwards_stay_within_the_budget(draft, chunked):
    budget = 16
    ps = prompts(2, 100, 130, seed=31)
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    want, got, reports, sizes = run_both(
        ps, params, "draft:tiny:4", draft, num_blocks=160, block_size=4,
        max_num_batched_tokens=budget, enable_chunked_prefill=chunked)
    assert got == want
    assert max(sizes) <= budget, f"a draft forward of {max(sizes)} tokens"
    assert sum(sizes) >= sum(len(p) for p in ps), "the draft never caught up on the prompts"
    rows = sum(r.spec_rows for r in reports)
    assert rows > 0
    if draft == "same":
        assert sum(r.spec_accepted for r in reports) == sum(r.spec_proposed for r in reports)
    if not chunked:    # the target ran a whole prompt over the budget; the draft did not
        assert max(r.num_prefill_tokens for r in reports) > budget


def test_preemption_recompute_draft_catches_up_within_the_budget():
    budget = 12
    ps = prompts(6, 20, 40, seed=32)
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    want, got, reports, sizes = run_both(
        ps, params, "draft:tiny:3", "same", num_blocks=40, block_size=4,
        max_num_batched_tokens=budget, max_num_seqs=6)
    assert reports[-1].cache.preemptions > 0
    assert got == want
    assert max(sizes) <= budget
    assert sum(r.spec_rows for r in reports) > 0
    assert sum(r.spec_accepted for r in reports) == sum(r.spec_proposed for r in reports)
