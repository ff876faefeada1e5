"""Batched next-token sampling: greedy, temperature, top-k, top-p, repetition penalty, seeds.

`sample(logits, params, generators, seen)` takes one logits row per sequence that needs a token
this step and returns one id per row. The logit transforms run batched over the rows; only the
final random draw is per row, because each request has its own torch.Generator (a request's
seed then gives the same tokens whatever else shares the batch).

Order of operations (Hugging Face's): repetition penalty -> temperature -> top-k -> top-p ->
softmax -> draw. Greedy (temperature 0) takes the argmax after the repetition penalty.
It does not decide when to stop (the engine does) and does not touch the KV cache.

`sample_ids` is the same draw as an (N,) tensor on the logits' device without a device-to-host
sync (overlap scheduling: the runner launches the sampling of step N and plans N+1 before the
ids reach the host). The random draw is written out as torch.multinomial's own one-sample path
(argmax of p / q, q ~ Exp(1) from the row's generator): the same ids for the same generator
state, without multinomial's validity check, which reads a device value back to the host.
Parameter tensors go to the device from pinned memory (non-blocking).
"""
from __future__ import annotations

import torch

from llm_playground.model.engine.device_batch import host_to_device
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
    """logits (N, V) float32, one row per sequence; returns N token ids (a host list: syncs)."""
    return sample_ids(logits, params, generators, seen).tolist()


def sample_ids(logits: torch.Tensor, params: list[SamplingParams],
               generators: list[torch.Generator | None], seen: list[list[int]]) -> torch.Tensor:
    """logits (N, V) float32 -> (N,) int64 ids on the logits' device, no device-to-host sync
    (a repetition penalty still copies its ids to the device the blocking way)."""
    N = logits.shape[0]
    if N == 0:
        return torch.empty(0, dtype=torch.long, device=logits.device)
    penalties = [p.repetition_penalty for p in params]
    logits = logits.float()
    if any(p != 1.0 for p in penalties):
        logits = apply_repetition_penalty(logits.clone(), seen, penalties)   # caller's tensor kept
    greedy = [p.temperature == 0 for p in params]
    out = logits.argmax(dim=-1)                                              # (N,)
    rows = [i for i in range(N) if not greedy[i]]
    if not rows:
        return out
    dev = logits.device
    sub = logits if len(rows) == N else logits.index_select(0, host_to_device(rows, torch.long, dev))
    temp = host_to_device([params[i].temperature for i in rows], torch.float32, dev)    # (M,)
    # Shifted so each row's largest logit is 0 before scaling (the softmax does not change): a
    # tiny temperature (1e-45) then sends the others to -inf instead of the top ones to +inf,
    # whose softmax is NaN, and the draw is the argmax.
    sub = (sub - sub.amax(dim=-1, keepdim=True)) / temp.unsqueeze(1)         # (M, V)
    if any(params[i].top_k > 0 or params[i].top_p < 1 for i in rows):        # host values: no sync
        top_k = host_to_device([params[i].top_k for i in rows], torch.long, dev)
        top_p = host_to_device([params[i].top_p for i in rows], torch.float32, dev)
        sub = apply_top_k_top_p(sub, top_k, top_p)
    probs = sub.softmax(dim=-1)                                              # (M, V)
    drawn = []
    for j, i in enumerate(rows):   # torch.multinomial(probs[j], 1)'s one-sample path, no check
        q = torch.empty_like(probs[j]).exponential_(1, generator=generators[i])            # (V,)
        drawn.append((probs[j] / q).argmax(dim=-1, keepdim=True))                          # (1,)
    drawn_t = torch.cat(drawn)                                               # (M,)
    if len(rows) == N:
        return drawn_t
    return out.index_copy(0, host_to_device(rows, torch.long, dev), drawn_t)


def make_generator(seed: int | None, sample_index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """One generator per sequence: sample i of a request with seed s uses seed s + i, so sample i
    equals a lone request with seed s + i. No seed: a fresh nondeterministic seed."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed + sample_index)
    return g
