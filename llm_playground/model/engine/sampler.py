"""Batched next-token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeds.

`sample(logits, params, generators, seen)` takes one logits row per sequence that needs a token
this step and returns one id per row. The logit transforms run batched over the rows; only the
final random draw is per row, because each request has its own torch.Generator (a request's
seed then gives the same tokens whatever else shares the batch).

Order of operations (Hugging Face's): repetition penalty -> temperature -> top-k -> top-p ->
min-p -> softmax -> draw. Greedy (temperature 0) takes the argmax after the repetition penalty.
It does not decide when to stop (the engine does) and does not touch the KV cache.

`sample_ids` is the same draw as an (N,) tensor on the logits' device without a device-to-host
sync (overlap scheduling: the runner launches the sampling of step N and plans N+1 before the
ids reach the host). The random draw is written out as torch.multinomial's own one-sample path
(argmax of p / q, q ~ Exp(1) from the row's generator): the same ids for the same generator
state, without multinomial's validity check, which reads a device value back to the host.
Parameter tensors go to the device from pinned memory (non-blocking).

`sample_with_choices` is the same draw that also reports, for the rows whose params set
`logprobs`, what the sampler considered: the logits after each stage are kept as the stages run
(`_Recorder`), and once the ids are drawn one batched pass turns them into a `TokenChoice` per
row (model/engine/token_choice.py: candidates' log-probabilities per stage, entropies, the id
drawn). `sample_ids_with_choices` stops before the host: it returns the ids and a
`PendingChoices` whose few (R, S, C) tensors are still on the device (the runner copies them to
pinned memory with the ids, no sync) and become TokenChoices on the host in `choices()`.
`choices_for` runs the same stages over rows whose ids were chosen elsewhere (a speculative
verification, model/engine/spec_verify.py) and reports them without a draw: the TokenChoice
each emitted token would have had from plain decoding at its position.
`sample` and `sample_ids` never build a recorder: no extra work when no row asks.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from llm_playground.model.engine import token_choice as tc
from llm_playground.model.engine.device_batch import host_to_device
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
    """logits (N, V) float32, one row per sequence; returns N token ids (a host list: syncs)."""
    return _draw(logits, params, generators, seen, None).tolist()


def sample_ids(logits: torch.Tensor, params: list[SamplingParams],
               generators: list[torch.Generator | None], seen: list[list[int]]) -> torch.Tensor:
    """logits (N, V) float32 -> (N,) int64 ids on the logits' device, no device-to-host sync
    (a repetition penalty still copies its ids to the device the blocking way)."""
    return _draw(logits, params, generators, seen, None)


def sample_with_choices(logits: torch.Tensor, params: list[SamplingParams],
                        generators: list[torch.Generator | None], seen: list[list[int]]
                        ) -> tuple[list[int], list[TokenChoice | None]]:
    """The same ids as `sample`, and per row a TokenChoice (None for rows whose params.logprobs
    is None): what each filter stage left, from the logits of this very draw (syncs)."""
    ids, pending = sample_ids_with_choices(logits, params, generators, seen)
    return ids.tolist(), pending.choices()


def sample_ids_with_choices(logits: torch.Tensor, params: list[SamplingParams],
                            generators: list[torch.Generator | None], seen: list[list[int]]
                            ) -> tuple[torch.Tensor, "PendingChoices"]:
    """`sample_ids`' (N,) ids and the rows' choices still on the device (no sync)."""
    rec = _Recorder(params)
    ids = _draw(logits, params, generators, seen, rec)
    return ids, rec.pending(ids, logits.shape[-1])


def choices_for(logits: torch.Tensor, params: list[SamplingParams], seen: list[list[int]],
                ids: torch.Tensor) -> "PendingChoices":
    """What the sampler considers on `logits` (N, V) with `params` / `seen`, reported for the
    ids (N,) int64 chosen elsewhere (a speculative verification: the emitted token and the
    target's distribution at its position): the stages of `sample_ids_with_choices`, no random
    draw (no generator is touched), no sync."""
    rec = _Recorder(params)
    _draw(logits, params, [None] * logits.shape[0], seen, rec, draw=False)
    return rec.pending(ids, logits.shape[-1])


def _draw(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
          seen: list[list[int]], rec: "_Recorder | None", draw: bool = True) -> torch.Tensor:
    """The sampler itself: (N,) int64 ids on the logits' device; `rec` (None on the normal
    path) is shown each stage's logits. `draw` False stops after the filters (the ids then
    returned are the argmax, only for `choices_for`'s recorder)."""
    N = logits.shape[0]
    if N == 0:
        return torch.empty(0, dtype=torch.long, device=logits.device)
    penalties = [p.repetition_penalty for p in params]
    logits = logits.float()
    every = range(N)
    if rec is not None:
        rec.add(tc.MODEL, logits, every)
    if penalties.count(1.0) != N:                # some row has a penalty (no per-row call)
        logits = apply_repetition_penalty(logits.clone(), seen, penalties)   # caller's tensor kept
        if rec is not None:
            rec.add(tc.REPETITION_PENALTY, logits, every, lambda p: p.repetition_penalty != 1.0)
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
    if rec is not None:
        rec.add(tc.TEMPERATURE, sub, rows, lambda p: p.temperature != 1.0)
    if any(params[i].top_k > 0 or params[i].top_p < 1 for i in rows):        # host values: no sync
        top_k = host_to_device([params[i].top_k for i in rows], torch.long, dev)
        top_p = host_to_device([params[i].top_p for i in rows], torch.float32, dev)
        on_top_k = None
        if rec is not None:
            def on_top_k(t: torch.Tensor) -> None:
                rec.add(tc.TOP_K, t, rows, lambda p: p.top_k > 0)
        sub = apply_top_k_top_p(sub, top_k, top_p, on_top_k)
        if rec is not None:
            rec.add(tc.TOP_P, sub, rows, lambda p: p.top_p < 1.0)
    if any(params[i].min_p > 0 for i in rows):
        min_p = host_to_device([params[i].min_p for i in rows], torch.float32, dev)
        sub = apply_min_p(sub, min_p)
        if rec is not None:
            rec.add(tc.MIN_P, sub, rows, lambda p: p.min_p > 0)
    if not draw:
        return out
    probs = sub.softmax(dim=-1)                                              # (M, V)
    drawn = []
    for j, i in enumerate(rows):   # torch.multinomial(probs[j], 1)'s one-sample path, no check
        q = torch.empty_like(probs[j]).exponential_(1, generator=generators[i])            # (V,)
        drawn.append((probs[j] / q).argmax(dim=-1, keepdim=True))                          # (1,)
    drawn_t = torch.cat(drawn)                                               # (M,)
    if len(rows) == N:
        return drawn_t
    return out.index_copy(0, host_to_device(rows, torch.long, dev), drawn_t)


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

    def pending(self, ids: torch.Tensor, V: int) -> "PendingChoices":
        """The recorded rows' choices as device tensors, batched per stage list; ids (N,) are
        the draw's ids on the device (no sync)."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, stages in self.stages.items():
            if self.params[i].temperature == 0:          # greedy: the point mass on the argmax
                onehot = torch.full_like(stages[0][1], float("-inf"))                  # (V,)
                onehot.index_fill_(0, ids[i:i + 1], 0.0)
                stages.append((tc.ARGMAX, onehot))
            groups.setdefault(tuple(n for n, _ in stages), []).append(i)
        parts = []
        for names, rows in groups.items():
            ks = [min(self.params[i].logprobs, V) for i in rows]
            drawn = ids.index_select(0, host_to_device(rows, torch.long, ids.device))   # (R,)
            parts.append((rows, names, ks, _choice_tensors([self.stages[i] for i in rows], drawn, ks)))
        return PendingChoices(len(self.params), parts)


def _choice_tensors(stages: list[list[tuple[str, torch.Tensor]]], drawn: torch.Tensor,
                    ks: list[int]) -> list[torch.Tensor]:
    """R rows that went through the same S stages, in one device pass (no sync): [candidates
    (R, C) int64 (each stage's kmax best, then the drawn id last), their log-probabilities
    (R, S, C) float32, entropies (R, S) float32, ids kept (R, S) int32]."""
    R, S = len(stages), len(stages[0])
    x = torch.stack([t for row in stages for _, t in row]).view(R, S, -1)        # (R, S, V), one copy
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
    top = x.topk(kmax, dim=-1).indices.reshape(R, S * kmax)                       # (R, S*kmax)
    cand = torch.cat([top, drawn.unsqueeze(1)], dim=1)                            # (R, Cmax)
    lp = x.gather(2, cand.unsqueeze(1).expand(R, S, cand.shape[1])) - lse        # (R, S, Cmax)
    return [cand, lp, entropy, kept]


class PendingChoices:
    """The TokenChoices of one draw, before they reach the host: per group of rows that went
    through the same stages, (rows, stage names, k per row, [candidates, logprobs, entropies,
    kept] tensors). `to_host` moves the tensors (the runner: into pinned memory, non-blocking);
    `choices` reads them on the host (waiting where the copy has not landed) and builds one
    TokenChoice per recorded row, None elsewhere."""
    __slots__ = ("num_rows", "parts")

    def __init__(self, num_rows: int, parts: list) -> None:
        self.num_rows = num_rows
        self.parts = parts

    def to_host(self, move: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace every tensor by move(tensor) (a host copy under way)."""
        for part in self.parts:
            part[3][:] = [move(t) for t in part[3]]

    def choices(self) -> list[TokenChoice | None]:
        """One TokenChoice per row (None for rows that recorded none), read on the host."""
        out: list[TokenChoice | None] = [None] * self.num_rows
        for rows, names, ks, tensors in self.parts:
            cand, lp, entropy, kept = (t.cpu().numpy() for t in tensors)
            for i, choice in zip(rows, _build(names, ks, cand, lp, entropy, kept)):
                out[i] = choice
        return out


def _build(names: tuple[str, ...], ks: list[int], cand: np.ndarray, lp: np.ndarray,
           entropy: np.ndarray, kept: np.ndarray) -> list[TokenChoice]:
    """TokenChoices of R rows from `_choice_tensors`' arrays on the host."""
    S = len(names)
    kmax = (cand.shape[1] - 1) // S
    out = []
    for r in range(cand.shape[0]):
        k = ks[r]
        # each stage's k best that the stage still allows, then the drawn id (the last column)
        cols = [s * kmax + j for s in range(S) for j in range(k) if np.isfinite(lp[r, s, s * kmax + j])]
        cols = np.array(cols + [S * kmax], dtype=np.int64)
        ids, first = np.unique(cand[r, cols], return_index=True)
        cols = cols[first]
        order = np.lexsort((-lp[r, 0, cols], -lp[r, -1, cols]))   # by the last stage, then the model
        cols = cols[order]
        out.append(TokenChoice(token_id=int(cand[r, S * kmax]), stages=names,
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
