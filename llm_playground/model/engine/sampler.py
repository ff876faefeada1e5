"""Batched next-token sampling: greedy, temperature, top-k, top-p, repetition penalty, seeds.

`sample(logits, params, generators, seen)` takes one logits row per sequence that needs a token
this step and returns one id per row. The logit transforms run batched over the rows; only the
final random draw is per row, because each request has its own torch.Generator (a request's
seed then gives the same tokens whatever else shares the batch).

Order of operations (Hugging Face's): repetition penalty -> temperature -> top-k -> top-p ->
softmax -> draw. Greedy (temperature 0) takes the argmax after the repetition penalty.
It does not decide when to stop (the engine does) and does not touch the KV cache.
"""
from __future__ import annotations

import torch

from llm_playground.model.engine.sampling_params import SamplingParams


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


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) logits outside each row's top-k and top-p nucleus. top_k 0 = off, top_p 1 = off.
    logits (N, V) float32; top_k (N,) int64; top_p (N,) float32."""
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)        # (N, V) ascending
    V = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))
    kth = sorted_logits.gather(1, (V - k).unsqueeze(1))                      # (N, 1) k-th largest
    sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    cum = probs.cumsum(dim=-1)                                               # ascending cumulative
    drop = cum <= (1 - top_p).unsqueeze(1)                                   # (N, V)
    drop[:, -1] = False                                                      # keep at least one
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, sorted_idx, sorted_logits)


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None], seen: list[list[int]]) -> list[int]:
    """logits (N, V) float32, one row per sequence; returns N token ids."""
    N = logits.shape[0]
    if N == 0:
        return []
    penalties = [p.repetition_penalty for p in params]
    logits = logits.float()
    if any(p != 1.0 for p in penalties):
        logits = apply_repetition_penalty(logits.clone(), seen, penalties)   # caller's tensor kept
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
    top_k = torch.tensor([params[i].top_k for i in rows], device=sub.device, dtype=torch.long)
    top_p = torch.tensor([params[i].top_p for i in rows], device=sub.device, dtype=torch.float32)
    if bool((top_k > 0).any()) or bool((top_p < 1).any()):
        sub = apply_top_k_top_p(sub, top_k, top_p)
    probs = sub.softmax(dim=-1)                                              # (M, V)
    for j, i in enumerate(rows):
        out[i] = int(torch.multinomial(probs[j], 1, generator=generators[i]).item())
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
