"""Batched next-token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeds.

`sample(logits, params, generators, seen)` takes one logits row per sequence that needs a token
this step and returns one id per row. The logit transforms run batched over the rows; only the
final random draw is per row, because each request has its own torch.Generator (a request's
seed then gives the same tokens whatever else shares the batch).

Order of operations (Hugging Face's): repetition penalty -> temperature -> top-k -> top-p ->
min-p -> softmax -> draw. Greedy (temperature 0) takes the argmax after the repetition penalty.

`sample_with_choices` is the same draw that also reports, for the rows whose params set
`logprobs`, what the sampler considered: the logits after each stage are kept as the stages run
(`_Recorder`), and once the ids are drawn one batched pass turns them into a `TokenChoice` per
row (model/engine/token_choice.py: candidates' log-probabilities per stage, entropies, the id
drawn), copied to the host as numpy. `sample` never builds a recorder: no extra work when no
row asks. It does not decide when to stop (the engine does) and does not touch the KV cache.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from llm_playground.model.engine import token_choice as tc
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.token_choice import TokenChoice


def apply_repetition_penalty(logits: torch.Tensor, seen: list[list[int]], penalties: list[float]) -> torch.Tensor:
    """HF rule: for each id already in the sequence (prompt + output), a logit < 0 is multiplied
    by the penalty and a logit >= 0 divided by it."""
    for i, (ids, p) in enumerate(zip(seen, penalties)):
        if p == 1.0 or not ids:
            continue
        idx = torch.tensor(sorted(set(ids)), device=logits.device, dtype=torch.long)
        row = logits[i, idx]                                     # (U,)
        logits[i, idx] = torch.where(row < 0, row * p, row / p)
    return logits


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                      on_top_k: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """Mask (to -inf) logits outside each row's top-k and top-p nucleus. top_k 0 = off, top_p 1 = off.
    logits (N, V) float32; top_k (N,) int64; top_p (N,) float32. `on_top_k` (the sampler's
    report only) is given the (N, V) logits after top-k alone."""
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)        # (N, V) ascending
    V = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))
    kth = sorted_logits.gather(1, (V - k).unsqueeze(1))                      # (N, 1) k-th largest
    sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    if on_top_k is not None:
        on_top_k(torch.full_like(logits, float("-inf")).scatter(1, sorted_idx, sorted_logits))
    probs = sorted_logits.softmax(dim=-1)
    cum = probs.cumsum(dim=-1)                                               # ascending cumulative
    drop = cum <= (1 - top_p).unsqueeze(1)                                   # (N, V)
    drop[:, -1] = False                                                      # keep at least one
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, sorted_idx, sorted_logits)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) ids whose probability is below min_p times the row's top probability (the
    top id always stays). logits (N, V) float32; min_p (N,) float32, 0 = off."""
    probs = logits.softmax(dim=-1)                                           # (N, V)
    threshold = min_p.unsqueeze(1) * probs.amax(dim=-1, keepdim=True)        # (N, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None], seen: list[list[int]]) -> list[int]:
    """logits (N, V) float32, one row per sequence; returns N token ids."""
    return _draw(logits, params, generators, seen, None)


def sample_with_choices(logits: torch.Tensor, params: list[SamplingParams],
                        generators: list[torch.Generator | None], seen: list[list[int]]
                        ) -> tuple[list[int], list[TokenChoice | None]]:
    """The same ids as `sample`, and per row a TokenChoice (None for rows whose params.logprobs
    is None): what each filter stage left, from the logits of this very draw."""
    rec = _Recorder(params)
    tokens = _draw(logits, params, generators, seen, rec)
    return tokens, rec.choices(tokens, logits.shape[-1])


def _draw(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
          seen: list[list[int]], rec: "_Recorder | None") -> list[int]:
    """The sampler itself; `rec` (None on the normal path) is shown each stage's logits."""
    N = logits.shape[0]
    if N == 0:
        return []
    penalties = [p.repetition_penalty for p in params]
    logits = logits.float()
    every = range(N)
    if rec is not None:
        rec.add(tc.MODEL, logits, every)
    if any(p != 1.0 for p in penalties):
        logits = apply_repetition_penalty(logits.clone(), seen, penalties)   # caller's tensor kept
        if rec is not None:
            rec.add(tc.REPETITION_PENALTY, logits, every, lambda p: p.repetition_penalty != 1.0)
    greedy = [p.temperature == 0 for p in params]
    out = logits.argmax(dim=-1).tolist()                                     # (N,)
    rows = [i for i in range(N) if not greedy[i]]
    if not rows:
        return out
    sub = logits[rows]                                                       # (M, V)
    temp = torch.tensor([params[i].temperature for i in rows], device=sub.device)
    # Shifted so each row's largest logit is 0 before scaling (the softmax does not change): a
    # tiny temperature (1e-45) then sends the others to -inf instead of the top ones to +inf,
    # whose softmax is NaN, and the draw is the argmax.
    sub = (sub - sub.amax(dim=-1, keepdim=True)) / temp.unsqueeze(1)
    if rec is not None:
        rec.add(tc.TEMPERATURE, sub, rows, lambda p: p.temperature != 1.0)
    top_k = torch.tensor([params[i].top_k for i in rows], device=sub.device, dtype=torch.long)
    top_p = torch.tensor([params[i].top_p for i in rows], device=sub.device, dtype=torch.float32)
    if bool((top_k > 0).any()) or bool((top_p < 1).any()):
        on_top_k = None
        if rec is not None:
            def on_top_k(t: torch.Tensor) -> None:
                rec.add(tc.TOP_K, t, rows, lambda p: p.top_k > 0)
        sub = apply_top_k_top_p(sub, top_k, top_p, on_top_k)
        if rec is not None:
            rec.add(tc.TOP_P, sub, rows, lambda p: p.top_p < 1.0)
    if any(params[i].min_p > 0 for i in rows):
        min_p = torch.tensor([params[i].min_p for i in rows], device=sub.device, dtype=torch.float32)
        sub = apply_min_p(sub, min_p)
        if rec is not None:
            rec.add(tc.MIN_P, sub, rows, lambda p: p.min_p > 0)
    probs = sub.softmax(dim=-1)                                              # (M, V)
    for j, i in enumerate(rows):
        out[i] = int(torch.multinomial(probs[j], 1, generator=generators[i]).item())
    return out


class _Recorder:
    """The logits rows after each filter stage, kept (as views: the stages make new tensors and
    never write into an earlier one) for the rows whose params set `logprobs`."""

    def __init__(self, params: list[SamplingParams]) -> None:
        self.params = params
        self.stages: dict[int, list[tuple[str, torch.Tensor]]] = {
            i: [] for i, p in enumerate(params) if p.logprobs is not None}

    def add(self, name: str, t: torch.Tensor, rows, on: Callable[[SamplingParams], bool] = lambda p: True
            ) -> None:
        """Stage `name` left `t` (len(rows), V): row j is batch row rows[j]; kept where `on` says
        the stage is on for that row's params."""
        for j, i in enumerate(rows):
            if i in self.stages and on(self.params[i]):
                self.stages[i].append((name, t[j]))

    def choices(self, tokens: list[int], V: int) -> list[TokenChoice | None]:
        """One TokenChoice per recorded row (None elsewhere), batched per stage list."""
        out: list[TokenChoice | None] = [None] * len(tokens)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, stages in self.stages.items():
            if self.params[i].temperature == 0:          # greedy: the point mass on the argmax
                onehot = torch.full_like(stages[0][1], float("-inf"))
                onehot[tokens[i]] = 0.0
                stages.append((tc.ARGMAX, onehot))
            groups.setdefault(tuple(n for n, _ in stages), []).append(i)
        for names, rows in groups.items():
            ks = [min(self.params[i].logprobs, V) for i in rows]
            for i, choice in zip(rows, _choices(names, [self.stages[i] for i in rows],
                                                [tokens[i] for i in rows], ks)):
                out[i] = choice
        return out


def _choices(names: tuple[str, ...], stages: list[list[tuple[str, torch.Tensor]]],
             tokens: list[int], ks: list[int]) -> list[TokenChoice]:
    """TokenChoices of R rows that went through the same S stages (one device pass, one copy)."""
    R, S = len(stages), len(names)
    x = torch.stack([t for row in stages for _, t in row]).view(R, S, -1)        # (R, S, V), one copy
    V = x.shape[-1]
    # softmax gives each stage's probabilities in one fast pass (a plain exp of -inf or of very
    # negative logits takes a slow path on CPU, ten times slower). With y = x - max, the top id
    # has p = 1 / sum(e^y), so log-normaliser = max - log(p_top) and entropy H = -log(p_top) -
    # sum(p * y) (y clamped: a removed id adds 0 * -1e30 = 0, not NaN).
    p = x.softmax(dim=-1)                                                         # (R, S, V)
    m = x.amax(dim=-1, keepdim=True)                                              # (R, S, 1)
    log_top = p.amax(dim=-1, keepdim=True).log()                                  # (R, S, 1)
    y = (x - m).clamp_(min=-1e30)
    entropy = (-log_top[..., 0] - (p * y).sum(dim=-1)).clamp_(min=0.0).abs_()      # (R, S) >= 0, no -0
    lse = m - log_top                                                             # (R, S, 1)
    kept = (x > float("-inf")).sum(dim=-1, dtype=torch.int32)                     # (R, S)
    kmax = max(ks)
    drawn = torch.tensor(tokens, device=x.device, dtype=torch.long).unsqueeze(1)  # (R, 1)
    top = x.topk(kmax, dim=-1).indices.reshape(R, S * kmax)                       # (R, S*kmax)
    cand = torch.cat([top, drawn], dim=1)                                         # (R, Cmax)
    lp = x.gather(2, cand.unsqueeze(1).expand(R, S, cand.shape[1])) - lse        # (R, S, Cmax)
    cand, lp = cand.cpu().numpy(), lp.cpu().numpy()
    entropy, kept = entropy.cpu().numpy(), kept.cpu().numpy()
    out = []
    for r in range(R):
        k = ks[r]
        # each stage's k best that the stage still allows, then the drawn id (the last column)
        cols = [s * kmax + j for s in range(S) for j in range(k) if np.isfinite(lp[r, s, s * kmax + j])]
        cols = np.array(cols + [S * kmax], dtype=np.int64)
        ids, first = np.unique(cand[r, cols], return_index=True)
        cols = cols[first]
        order = np.lexsort((-lp[r, 0, cols], -lp[r, -1, cols]))   # by the last stage, then the model
        cols = cols[order]
        out.append(TokenChoice(token_id=int(tokens[r]), stages=names,
                               candidate_ids=cand[r, cols].astype(np.int64),
                               logprobs=lp[r][:, cols].astype(np.float32), entropy=entropy[r].copy(),
                               kept=kept[r].astype(np.int64), k=k))
    return out


def make_generator(seed: int | None, sample_index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """One generator per sequence: sample i of a request with seed s uses seed s + i, so sample i
    equals a lone request with seed s + i. No seed: a fresh nondeterministic seed."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed + sample_index)
    return g
