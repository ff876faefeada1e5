"""Speculative sampling keeps the target's distribution (temperature > 0): chi-square tests.

Oracle: the target's next-token distribution, from a plain forward of the whole sequence
(engine_helpers.last_logits) through transformers' logits processors (temperature, top-k,
top-p), never through our sampler. Power: each test also runs a broken verifier that accepts
every proposal and shows that the same test rejects it (p-value below 1e-6), so the test can
fail; the correct one must pass at p > 1e-3.

- `accept_rows` alone: a random target and a random draft distribution over 40 ids; the first
  emitted token over 30,000 verifications is distributed as the filtered target.
- the engine end to end: a tiny random target and a *different* tiny random draft model
  (`--speculate draft:PATH:4`), 1,600 seeded requests of one prompt; the second output token
  (the first one that comes from a verify row) among the requests whose first token is the
  most common one, against the target's distribution after the prompt and that token.
"""
from __future__ import annotations

import pytest
import torch
import transformers

from engine_helpers import last_logits, run_all, tiny_loaded
from llm_playground.model.engine import spec_verify
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.sampling_params import SamplingParams


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square p-value of `counts` (V,) against `probs` (V,); bins expecting
    fewer than 5 are merged; a count where the probability is 0 gives 0.0."""
    counts, probs = counts.double(), probs.double()
    if bool(((probs == 0) & (counts > 0)).any()):
        return 0.0
    n = counts.sum()
    exp = probs * n
    big = exp >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    e = torch.cat([exp[big], exp[~big].sum().view(1)])
    keep = e > 0
    obs, e = obs[keep], e[keep]
    x = ((obs - e) ** 2 / e).sum()
    df = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2), x / 2))


def hf_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution plain sampling draws from, by transformers' logits processors."""
    procs = transformers.LogitsProcessorList()
    if params.temperature != 1.0:
        procs.append(transformers.TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        procs.append(transformers.TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        procs.append(transformers.TopPLogitsWarper(params.top_p))
    scores = procs(torch.zeros(1, 1, dtype=torch.long), logits.double().view(1, -1).clone())
    return scores.softmax(-1)[0]


def accept_everything(real):
    """A broken verifier: every proposal accepted (what a wrong implementation might do)."""
    def broken(target, proposals, ks, params, generators, draft_probs=None):
        ids, _ = real(target, proposals, ks, params, generators, draft_probs)
        R = proposals.shape[0]
        out = torch.cat([proposals, ids[:, -1:]], dim=1)
        return out, ks.clone()
    return broken


def first_tokens_of_accept_rows(accept, n: int, seed: int = 0):
    """Counts of the first emitted token over n verify rows (one random target and draft), and
    the filtered target distribution it must follow."""
    g = torch.Generator().manual_seed(seed)
    V, K = 40, 3
    target_raw = torch.randn(K + 1, V, generator=g) * 2.0
    draft_raw = torch.randn(K, V, generator=g) * 2.0
    params = SamplingParams(temperature=0.8, top_k=30)
    filt = spec_verify.filtered_logits(target_raw, [params] * (K + 1), [[]] * (K + 1))
    q = spec_verify.filtered_logits(draft_raw, [params] * K, [[]] * K).softmax(-1)     # (K, V)
    gen = torch.Generator().manual_seed(seed + 1)
    d = torch.multinomial(q, n, replacement=True, generator=gen).T                     # (n, K)
    ids, m = accept(filt.expand(n, K + 1, V), d, torch.full((n,), K), [params] * n, [gen] * n,
                    q.expand(n, K, V))
    counts = torch.bincount(ids[:, 0], minlength=V).float()
    return counts, hf_probs(target_raw[0], params)


def test_accept_rows_keeps_the_target_distribution():
    counts, want = first_tokens_of_accept_rows(spec_verify.accept_rows, 30_000)
    assert chi2_pvalue(counts, want) > 1e-3
    bad, want = first_tokens_of_accept_rows(accept_everything(spec_verify.accept_rows), 30_000)
    assert chi2_pvalue(bad, want) < 1e-6          # the test has the power to see a broken one


PARAMS = SamplingParams(temperature=0.9, top_p=0.95, max_tokens=3, ignore_eos=True)
PROMPT = [5, 77, 190, 23, 9, 140]


def engine_second_tokens(n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(counts of the second token among requests whose first token is the most common one,
    the oracle's distribution for it, how many requests that was)."""
    target, draft = tiny_loaded(0), tiny_loaded(11)
    e = Engine(target, EngineConfig(num_blocks=2048, block_size=4, max_num_seqs=256,
                                    speculate="draft:tiny-11:4"), draft=draft)
    for i in range(n):
        e.add_request(PROMPT, SamplingParams(**{**PARAMS.__dict__, "seed": 10_000 + i}))
    ids, reports = run_all(e)
    assert sum(r.spec_rows for r in reports) > 0.9 * n          # second tokens were verified
    firsts = torch.tensor([v[0] for v in ids.values()])
    mode = int(firsts.mode().values)
    counts = torch.zeros(target.config.vocab_size)
    for v in ids.values():
        if v[0] == mode:
            counts[v[1]] += 1
    want = hf_probs(last_logits(target, PROMPT + [mode]), PARAMS)
    return counts, want, int((firsts == mode).sum())


@pytest.mark.slow
def test_engine_speculative_sampling_matches_the_target(monkeypatch):
    counts, want, kept = engine_second_tokens(1600)
    assert kept > 150
    assert chi2_pvalue(counts, want) > 1e-3
    monkeypatch.setattr(spec_verify, "accept_rows", accept_everything(spec_verify.accept_rows))
    bad, want_bad, kept_bad = engine_second_tokens(1600)
    assert chi2_pvalue(bad, want_bad) < 1e-6
