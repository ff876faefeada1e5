"""TokenChoices under speculation: every emitted token (accepted proposals and the target's own
corrected or bonus token) carries the TokenChoice plain decoding gives it.

Oracles:
- greedy (float32, tiny random models): the same engine with speculation off. Token for
  token the ids, the stages, the candidates, their log-probabilities (to 1e-4: a verify row computes
  its logits in another float32 order than a decode), the
  entropies and the kept counts are equal, for prompt lookup, a separate draft model (one
  that is mostly rejected, and the target's own weights: all accepted), self-speculation,
  with and without a repetition penalty, and with overlap on;
- temperature > 0 (samples differ from speculation off: another random stream): each token's
  choice against a whole-sequence forward of the target over the prompt and the tokens before
  it (`last_logits`): the model's log-softmax, the temperature's, the top-k cut, computed here
  from those logits; and its token id is the one emitted.
Each case also checks that speculation did verify rows (else it would test nothing).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import last_logits, tiny_loaded
from test_speculation import copying_prompts, run_checked, spec_engine
from llm_playground.model.engine.sampling_params import SamplingParams


def choices_run(e, ps, params):
    """{(request, sample): (ids, choices)} and the reports of running `ps` on `e`."""
    for p in ps:
        e.add_request(p, params)
    got: dict = {}
    reports = []
    while e.has_unfinished():
        r = e.step()
        reports.append(r)
        for o in r.outputs:
            ids, chs = got.setdefault((o.request_id, o.sample_index), ([], []))
            ids += o.new_token_ids
            chs += o.choices or []
    e.bm.check_invariants()
    assert e.bm.num_owned == 0
    return got, reports


def assert_same_choice(a, b, where) -> None:
    assert a.token_id == b.token_id, where
    assert a.stages == b.stages, where
    assert a.k == b.k, where
    np.testing.assert_array_equal(a.candidate_ids, b.candidate_ids, err_msg=str(where))
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4, rtol=0, err_msg=str(where))
    np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-4, rtol=0, err_msg=str(where))
    np.testing.assert_array_equal(a.kept, b.kept, err_msg=str(where))


SPECS = [("ngram:4", None), ("draft:tiny:3", "other"), ("draft:tiny:4", "same"),
         ("draft:layers=1:3", None)]
# a repetition penalty speculates with prompt lookup only (a draft model's is refused)
CASES = [(s, d, 1.0, over) for s, d in SPECS for over in (False, True)] + [("ngram:4", None, 1.05, False)]


@pytest.mark.parametrize("spec,draft,penalty,overlap", CASES)
def test_greedy_choices_with_speculation_equal_off(spec, draft, penalty, overlap):
    ps = copying_prompts(3, 5, 12, seed=26)
    params = SamplingParams(max_tokens=24, ignore_eos=True, logprobs=3,
                            repetition_penalty=penalty)
    want, _ = choices_run(spec_engine("off", None, num_blocks=128, block_size=4,
                                      overlap=overlap), ps, params)
    got, reports = choices_run(spec_engine(spec, draft, num_blocks=128, block_size=4,
                                           overlap=overlap), ps, params)
    assert sum(r.spec_rows for r in reports) > 0, "nothing was verified"
    if draft == "same":
        assert sum(r.spec_accepted for r in reports) == sum(r.spec_proposed for r in reports)
    assert got.keys() == want.keys()
    for key, (ids, chs) in want.items():
        g_ids, g_chs = got[key]
        assert g_ids == ids, key
        assert len(g_chs) == len(chs) == len(ids), key
        for pos, (a, b) in enumerate(zip(g_chs, chs)):
            assert_same_choice(a, b, (spec, key, pos))


def test_stop_inside_a_verify_row_keeps_choices_parallel():
    """A stop id met inside a verification: the tokens after it are dropped with their
    choices (one choice per emitted token)."""
    ps = copying_prompts(2, 6, 10, seed=5)
    free = SamplingParams(max_tokens=20, ignore_eos=True)
    want, _ = choices_run(spec_engine("off", None), ps, free)
    for (rid, _), (ids, _) in want.items():
        params = SamplingParams(max_tokens=20, logprobs=1, stop_token_ids=(ids[9],))
        off, _ = choices_run(spec_engine("off", None), [ps[rid]], params)
        on, reports = choices_run(spec_engine("draft:tiny:5", "same"), [ps[rid]], params)
        assert sum(r.spec_rows for r in reports) > 0
        (o_ids, o_chs), (s_ids, s_chs) = off[0, 0], on[0, 0]
        assert s_ids == o_ids and len(s_chs) == len(s_ids)
        for pos, (a, b) in enumerate(zip(s_chs, o_chs)):
            assert_same_choice(a, b, (rid, pos))


@pytest.mark.parametrize("spec,draft", [("ngram:4", None), ("draft:tiny:4", "same")])
def test_sampled_choices_are_the_targets_distribution(spec, draft):
    ps = copying_prompts(3, 6, 10, seed=12)
    T, K = 0.8, 6
    params = SamplingParams(temperature=T, top_k=K, seed=3, max_tokens=20, ignore_eos=True,
                            logprobs=4)
    got, reports = choices_run(spec_engine(spec, draft, num_blocks=128, block_size=4), ps, params)
    accepted, proposed = (sum(r.spec_accepted for r in reports), sum(r.spec_proposed for r in reports))
    assert accepted > 0, "no proposal was accepted"
    assert draft == "same" or accepted < proposed, "no token was drawn from the residual"
    target = tiny_loaded(0)
    for (rid, _), (ids, chs) in got.items():
        assert len(chs) == len(ids)
        for pos, (tok, c) in enumerate(zip(ids, chs)):
            logits = last_logits(target, ps[rid] + ids[:pos]).double()               # (V,)
            assert c.token_id == tok
            assert c.stages == ("model", "temperature", "top_k")
            cand = torch.as_tensor(c.candidate_ids)
            model = torch.log_softmax(logits, -1)[cand]
            temp = torch.log_softmax(logits / T, -1)[cand]
            kth = logits.topk(K).values[-1]
            scaled = torch.where(logits >= kth, logits / T, torch.tensor(float("-inf"),
                                                                         dtype=torch.float64))
            topk = torch.log_softmax(scaled, -1)[cand]
            for s, ref in enumerate((model, temp, topk)):
                np.testing.assert_allclose(c.logprobs[s], ref.float().numpy(), atol=1e-4,
                                           err_msg=str((spec, rid, pos, s)))
            assert c.kept.tolist() == [target.config.vocab_size] * 2 + [K]
            assert np.isfinite(c.logprobs[2, c.drawn_index]), "drawn outside the top-k"
