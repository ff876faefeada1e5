"""What the sampler considered (SamplingParams.logprobs -> TokenChoice) against the oracles:
transformers' logits processors applied one by one to the same logits, and a direct torch
softmax of the logits from a plain forward of the tiny model (no engine, no paging). Also: the
id a choice says was drawn is the id the engine emitted, and asking for choices changes no id
(greedy, seeded, n > 1, mixed batches), and the normal path never builds the report."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from engine_helpers import engine, last_logits, prompts, tiny_loaded
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llm_playground.model.engine import sampler as sampler_module
from llm_playground.model.engine import token_choice as tc
from llm_playground.model.engine.sampler import make_generator, sample, sample_with_choices
from llm_playground.model.engine.sampling_params import SamplingParams

CLOSE = dict(rtol=1e-4, atol=1e-6)


def hf_stages(logits: torch.Tensor, seen: list[int], p: SamplingParams) -> dict[str, torch.Tensor]:
    """The logits (V,) after each of the sampler's stages, from transformers' processors in
    transformers' order, only those that are on (the names TokenChoice uses)."""
    ids = torch.tensor([seen], dtype=torch.long)
    x = logits.float().unsqueeze(0).clone()
    out = {tc.MODEL: x[0].clone()}
    if p.repetition_penalty != 1.0:
        x = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(ids, x)
        out[tc.REPETITION_PENALTY] = x[0].clone()
    if p.temperature == 0:
        onehot = torch.full_like(x[0], float("-inf"))
        onehot[x[0].argmax()] = 0.0
        out[tc.ARGMAX] = onehot
        return out
    steps = [(tc.TEMPERATURE, p.temperature != 1.0, lambda: TemperatureLogitsWarper(p.temperature)),
             (tc.TOP_K, p.top_k > 0, lambda: TopKLogitsWarper(p.top_k)),
             (tc.TOP_P, p.top_p < 1.0, lambda: TopPLogitsWarper(p.top_p)),
             (tc.MIN_P, p.min_p > 0, lambda: MinPLogitsWarper(p.min_p))]
    for name, on, make in steps:
        if on:
            x = make()(ids, x)
            out[name] = x[0].clone()
    return out


def check_against_hf(choice: tc.TokenChoice, logits: torch.Tensor, seen: list[int],
                     p: SamplingParams) -> None:
    """Every figure of `choice` against the processors applied to `logits` (V,)."""
    stages = hf_stages(logits, seen, p)
    assert choice.stages == tuple(stages)
    cand = torch.from_numpy(choice.candidate_ids)
    for s, (name, x) in enumerate(stages.items()):
        probs = torch.softmax(x, dim=-1)                                         # (V,)
        torch.testing.assert_close(torch.from_numpy(choice.probs[s]), probs[cand], **CLOSE)
        logp = torch.log_softmax(x, dim=-1)
        plogp = torch.where(torch.isfinite(logp), probs * logp, torch.zeros_like(logp))
        assert choice.entropy[s] == pytest.approx(float(-plogp.sum()), rel=1e-4, abs=1e-5)
        assert choice.kept[s] == int(torch.isfinite(x).sum())
        # the k best ids the stage allows are candidates, and top() gives them in order
        k = min(choice.k, int(torch.isfinite(x).sum()))
        best = torch.topk(probs, k).indices.tolist()
        assert set(best) <= set(choice.candidate_ids.tolist()), name
        top = choice.top(s)
        assert [i for i, _ in top] == best, name
        assert [lp for _, lp in top] == pytest.approx(logp[best].tolist(), rel=1e-4, abs=1e-5)
    # the model stage is a plain softmax of the raw logits
    direct = torch.softmax(logits.float(), dim=-1)
    torch.testing.assert_close(torch.from_numpy(choice.probs[0]), direct[cand], **CLOSE)
    assert choice.logprob(0) == pytest.approx(math.log(float(direct[choice.token_id])), rel=1e-4)
    assert choice.probs[-1, choice.drawn_index] > 0          # it was allowed where it was drawn
    last = choice.logprobs[-1].tolist()                      # candidates best first (drawn-from)
    assert last == sorted(last, reverse=True)


PARAMS = [
    SamplingParams(),                                                        # greedy
    SamplingParams(repetition_penalty=1.5),                                  # greedy, penalised
    SamplingParams(temperature=0.8, seed=1),
    SamplingParams(temperature=1.0, top_k=7, seed=2),
    SamplingParams(temperature=0.7, top_p=0.6, seed=3),
    SamplingParams(temperature=1.3, min_p=0.1, seed=4),
    SamplingParams(temperature=0.9, top_k=40, top_p=0.8, min_p=0.05, repetition_penalty=1.3, seed=5),
]


@pytest.mark.parametrize("k", [0, 1, 5])
def test_choices_on_random_logits_equal_hf_processors(k):
    g = torch.Generator().manual_seed(k)
    N, V = len(PARAMS), 300
    logits = torch.randn(N, V, generator=g) * 3
    seen = [torch.randint(0, V, (12,), generator=g).tolist() for _ in range(N)]
    params = [SamplingParams(**{**vars(p), "logprobs": k}) for p in PARAMS]
    gens = [make_generator(p.seed, 0) for p in params]
    ids, choices = sample_with_choices(logits, params, gens, seen)
    plain = sample(logits, PARAMS, [make_generator(p.seed, 0) for p in PARAMS], seen)
    assert ids == plain                                     # the report changes no draw
    for i, (choice, p) in enumerate(zip(choices, params)):
        assert choice.token_id == ids[i]
        assert choice.k == k
        check_against_hf(choice, logits[i], seen[i], p)
        if k == 0:                                          # only the drawn id
            assert choice.candidate_ids.tolist() == [ids[i]]


def test_rows_that_do_not_ask_get_none_and_the_same_ids():
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 120, generator=g) * 2
    params = [SamplingParams(temperature=0.9, top_p=0.9, seed=i, logprobs=3 if i % 2 else None)
              for i in range(4)]
    ids, choices = sample_with_choices(logits, params, [make_generator(i, 0) for i in range(4)], [[]] * 4)
    assert ids == sample(logits, params, [make_generator(i, 0) for i in range(4)], [[]] * 4)
    assert [c is None for c in choices] == [True, False, True, False]


def test_greedy_choice_is_the_point_mass_on_the_argmax():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(3))
    ids, (choice,) = sample_with_choices(logits, [SamplingParams(logprobs=4)], [None], [[]])
    assert choice.stages == (tc.MODEL, tc.ARGMAX)
    assert ids[0] == int(logits[0].argmax()) == choice.token_id == int(choice.candidate_ids[0])
    assert choice.entropy[-1] == 0 and choice.kept.tolist() == [50, 1]
    assert choice.probs[-1].tolist() == [1.0] + [0.0] * (len(choice.candidate_ids) - 1)


# ---- in the engine, against a direct forward of the tiny model ------------------------------

def direct_logits(ids: list[int], seed: int = 0) -> torch.Tensor:
    """Last-position logits (V,) of the tiny model over `ids`, one plain forward of the whole
    sequence (no engine, no paging, no cache reuse)."""
    return last_logits(tiny_loaded(seed), ids)


def outputs(e, requests) -> dict:
    """Run every (prompt, params) to the end: {(request id, sample): (ids, choices or None)}."""
    rids = [e.add_request(p, sp) for p, sp in requests]
    got: dict = {}
    while e.has_unfinished():
        for out in e.step().outputs:
            ids, ch = got.setdefault((out.request_id, out.sample_index), ([], []))
            ids += out.new_token_ids
            if out.choices is None:
                got[(out.request_id, out.sample_index)] = (ids, None)
            elif ch is not None:
                assert len(out.choices) == len(out.new_token_ids)     # parallel, per output
                ch += out.choices
    assert {r for r, _ in got} == set(rids)
    return got


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("params", [
    SamplingParams(max_tokens=6, logprobs=5, repetition_penalty=1.2),
    SamplingParams(max_tokens=6, logprobs=5, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05,
                   repetition_penalty=1.2, seed=7, ignore_eos=True),
    SamplingParams(max_tokens=6, logprobs=3, ignore_eos=True),           # these two run ahead
    SamplingParams(max_tokens=6, logprobs=4, temperature=0.9, top_k=12, top_p=0.95, min_p=0.02,
                   seed=9, ignore_eos=True),
])
def test_engine_choices_equal_hf_on_a_direct_forward(params, overlap):
    """With overlap on (EngineConfig.overlap, the CPU runs its one-step-late path), a request
    without a repetition penalty runs ahead of its result (its next decode reads the drawn id
    on the device) and its choices come through the runner's host copies one call late: still
    the distribution of that very draw."""
    prompt = prompts(1, 9, 9, seed=3)[0]
    e = engine(overlap=overlap)
    deferred = []
    real_submit = e.runner.submit
    e.runner.submit = lambda plan: (deferred.append(sum(len(b.deferred_tokens) for b in plan.batches)),
                                    real_submit(plan))[1]
    ((ids, choices),) = outputs(e, [(prompt, params)]).values()
    ahead = overlap and params.repetition_penalty == 1.0
    assert (sum(deferred) > 0) == ahead                     # the rows ran ahead exactly then
    assert len(ids) == len(choices) == 6
    for j, (tok, choice) in enumerate(zip(ids, choices)):
        assert choice.token_id == tok                       # the id drawn is the id emitted
        context = prompt + ids[:j]
        check_against_hf(choice, direct_logits(context), context, params)


def test_asking_for_choices_changes_no_id_greedy_seeded_and_forked():
    ps = prompts(5, 3, 14, seed=5)
    base = [SamplingParams(max_tokens=9),
            SamplingParams(max_tokens=9, repetition_penalty=1.4),
            SamplingParams(max_tokens=9, temperature=0.9, seed=11, top_p=0.85),
            SamplingParams(max_tokens=9, temperature=1.1, seed=12, top_k=15, min_p=0.02, n=3),
            SamplingParams(max_tokens=9, temperature=0.7, seed=13, repetition_penalty=1.2)]
    off = outputs(engine(), list(zip(ps, base)))
    on = outputs(engine(), [(p, SamplingParams(**{**vars(sp), "logprobs": 4})) for p, sp in zip(ps, base)])
    mixed = outputs(engine(), [(p, SamplingParams(**{**vars(sp), "logprobs": 2 if i % 2 else None}))
                               for i, (p, sp) in enumerate(zip(ps, base))])
    assert len(off) == 7                                    # 4 requests + 3 samples
    for key, (ids, _) in off.items():
        assert on[key][0] == ids and mixed[key][0] == ids
        assert [c.token_id for c in on[key][1]] == ids      # n > 1 children get their own choices
        assert off[key][1] is None
        assert (mixed[key][1] is None) == (key[0] % 2 == 0)


def test_the_normal_path_never_builds_the_report(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the report was built for a request that did not ask")
    monkeypatch.setattr(sampler_module, "_Recorder", refuse)
    monkeypatch.setattr(sampler_module, "sample_with_choices", refuse)
    ps = prompts(3, 4, 10, seed=8)
    got = outputs(engine(), [(p, SamplingParams(max_tokens=5, temperature=0.8, top_k=9, min_p=0.1,
                                                repetition_penalty=1.1, seed=i, n=2))
                             for i, p in enumerate(ps)])
    assert all(len(ids) == 5 and ch is None for ids, ch in got.values())


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_bad_logprobs_are_refused_in_one_line(value):
    with pytest.raises(ValueError, match="logprobs"):
        SamplingParams(logprobs=value)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_bad_min_p_is_refused_in_one_line(value):
    with pytest.raises(ValueError, match="min_p"):
        SamplingParams(min_p=value)
