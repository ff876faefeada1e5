"""Sampler against transformers' logits processors (the oracle for each transform) and seeds."""
from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llm_playground.model.engine.sampler import (apply_min_p, apply_repetition_penalty, apply_top_k_top_p,
                                                 make_generator, sample, sample_ids)
from llm_playground.model.engine.sampling_params import SamplingParams


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equals_hf(penalty):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g)
    seen = [[1, 2, 2, 40], [0], [49, 3, 7, 7, 7]]
    ours = apply_repetition_penalty(logits.clone(), seen, [penalty] * 3)
    for i in range(3):
        hf = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([seen[i]]), logits[i:i + 1].clone())
        torch.testing.assert_close(ours[i], hf[0], rtol=0, atol=0)


@pytest.mark.parametrize("top_k,top_p,temp", [(5, 1.0, 1.0), (0, 0.8, 0.7), (10, 0.5, 1.3), (1, 1.0, 2.0),
                                              (0, 0.05, 1.0)])
def test_top_k_top_p_keep_the_same_tokens_as_hf(top_k, top_p, temp):
    g = torch.Generator().manual_seed(top_k)
    logits = torch.randn(4, 200, generator=g) * 3
    scaled = logits / temp
    ours = apply_top_k_top_p(scaled.clone(), torch.full((4,), top_k), torch.full((4,), top_p))
    hf = TemperatureLogitsWarper(temp)(None, logits.clone())
    if top_k:
        hf = TopKLogitsWarper(top_k)(None, hf)
    if top_p < 1:
        hf = TopPLogitsWarper(top_p)(None, hf)
    assert torch.equal(torch.isinf(ours), torch.isinf(hf))
    torch.testing.assert_close(ours[~torch.isinf(ours)], hf[~torch.isinf(hf)])


def test_min_p_keeps_the_same_tokens_as_hf():
    logits = torch.randn(4, 200, generator=torch.Generator().manual_seed(6)) * 3
    logits[3, 7] = float("-inf")                        # a row an earlier filter already cut
    min_p = [0.0, 0.05, 0.3, 1.0]                       # off, small, large, only the top id
    ours = apply_min_p(logits.clone(), torch.tensor(min_p))
    for i, m in enumerate(min_p):
        hf = MinPLogitsWarper(m)(None, logits[i:i + 1].clone()) if m > 0 else logits[i:i + 1]
        assert torch.equal(ours[i], hf[0])
    assert int(torch.isfinite(ours[3]).sum()) == 1


def test_greedy_is_argmax_and_rows_are_independent():
    logits = torch.randn(3, 30, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(), SamplingParams(temperature=1.0, seed=3), SamplingParams()]
    gens = [make_generator(p.seed, 0) for p in params]
    out = sample(logits, params, gens, [[], [], []])
    assert out[0] == int(logits[0].argmax()) and out[2] == int(logits[2].argmax())


def test_seeded_draws_do_not_depend_on_batch_neighbours():
    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(2))
    p = SamplingParams(temperature=0.9, top_p=0.9, top_k=40, seed=11)
    alone = [sample(logits[1:2], [p], [make_generator(11, 0)], [[]])[0] for _ in range(1)]
    other = SamplingParams(temperature=1.0, seed=5)
    batched = sample(logits, [other, p, other, other],
                     [make_generator(5, 0), make_generator(11, 0), make_generator(5, 1), make_generator(5, 2)],
                     [[]] * 4)
    assert batched[1] == alone[0]


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = probs.log().expand(4000, 3).contiguous()
    params = [SamplingParams(temperature=1.0)] * 4000
    gen = make_generator(0, 0)
    out = torch.tensor(sample(logits, params, [gen] * 4000, [[]] * 4000))
    freq = torch.bincount(out, minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)


def test_a_tiny_temperature_draws_the_top_token_and_keeps_the_batch_alive():
    # Found in the playground: temperature 1e-45 overflowed the scaled logits to inf, the softmax
    # gave NaN and torch.multinomial failed the whole engine step (every chat in the batch).
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(4)) * 5
    params = [SamplingParams(temperature=1e-45, seed=1), SamplingParams(temperature=1e-45, top_k=3, seed=2)]
    out = sample(logits, params, [make_generator(1, 0), make_generator(2, 0)], [[], []])
    assert out == logits.argmax(dim=-1).tolist()


@pytest.mark.parametrize("field,value", [("temperature", float("nan")), ("temperature", float("inf")),
                                         ("repetition_penalty", float("nan")), ("seed", 2**64),
                                         ("seed", -(2**63) - 1)])
def test_values_the_sampler_cannot_use_are_refused_in_one_line(field, value):
    # NaN passed `temperature < 0` and failed later inside torch.multinomial; a seed past 64 bits
    # failed as "Overflow when unpacking long long" from torch.Generator.manual_seed.
    with pytest.raises(ValueError, match=field.split("_")[0]):
        SamplingParams(**{field: value})


def test_the_largest_seed_works_for_every_sample():
    p = SamplingParams(temperature=1.0, seed=2**64 - 2, n=2)
    assert [make_generator(p.seed, i).initial_seed() for i in range(2)] == [2**64 - 2, 2**64 - 1]
    with pytest.raises(ValueError, match="seed"):
        SamplingParams(seed=2**64 - 2, n=3)


def test_sample_ids_draws_what_torch_multinomial_draws_without_a_sync():
    """sample_ids writes torch.multinomial's one-sample path out by hand (no validity check,
    which reads back to the host): for the same generator state, the same ids, row by row,
    greedy rows mixed in; `sample` is its host list."""
    logits = torch.randn(7, 40, generator=torch.Generator().manual_seed(7)) * 3
    params = [SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m, seed=i)
              for i, (t, k, p, m) in enumerate([(1.0, 0, 1.0, 0.0), (0.0, 0, 1.0, 0.0), (0.7, 5, 1.0, 0.0),
                                                (1.3, 0, 0.8, 0.0), (0.0, 3, 1.0, 0.0), (0.9, 10, 0.9, 0.0),
                                                (1.2, 0, 1.0, 0.05)])]
    ids = sample_ids(logits, params, [make_generator(p.seed, 0) for p in params], [[]] * 7)
    assert ids.dtype == torch.long and ids.shape == (7,)
    want = []
    for i, p in enumerate(params):
        if p.temperature == 0:
            want.append(int(logits[i].argmax()))
            continue
        row = (logits[i:i + 1] - logits[i].max()) / p.temperature
        if p.top_k or p.top_p < 1:
            row = apply_top_k_top_p(row, torch.tensor([p.top_k]), torch.tensor([p.top_p]))
        if p.min_p:
            row = apply_min_p(row, torch.tensor([p.min_p]))
        g = make_generator(p.seed, 0)
        want.append(int(torch.multinomial(row.softmax(-1)[0], 1, generator=g)))
    assert ids.tolist() == want
    again = sample(logits, params, [make_generator(p.seed, 0) for p in params], [[]] * 7)
    assert again == want
