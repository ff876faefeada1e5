"""Speculative verification: which proposed tokens the target accepts, and the token after them.

Runner side (torch). A verify row brings the last accepted token x and K proposals d_1..d_K;
the target's K + 1 logits rows give its distributions p_0..p_K (p_j: the next token after
x, d_1..d_j). `accept_rows` returns the ids to emit, m accepted proposals then one more (all verify rows of a
step at once, padded to the longest):

- greedy (temperature 0): t_j = argmax p_j; m = the length of the longest prefix with
  d_{j+1} == t_j; the ids are t_0..t_m (d_1..d_m and the target's own next token). Exactly
  the tokens plain greedy decoding gives.
- temperature > 0 (Leviathan et al. 2023, Chen et al. 2023): proposal j is accepted with
  probability min(1, p_j(d) / q_j(d)), where q_j is the distribution d was drawn from (a
  draft model's, or a point mass for prompt lookup, whose proposals are deterministic); at the
  first rejection the token is drawn from max(0, p_j - q_j), renormalised; after K accepted
  ones from p_K. The emitted tokens are then distributed exactly as plain sampling from p.

p and q are the distributions the sampler would draw from: its filters (repetition penalty,
temperature, top-k, top-p, min-p; model/engine/sampler.py, the same functions in the same
order) applied to the target's and the draft's logits alike. Row j's repetition penalty counts
the sequence's ids and d_1..d_j (what plain decoding would have seen there).
Random draws come from the row's own generator (K uniforms, then one exponential race), so a
seeded request is reproducible; its samples differ from speculation off (other draws are
consumed) while their distribution is the same (tests/engine/test_spec_distribution.py).
Everything stays on the device: no value is read back here. This module does not plan, choose
K or touch the KV cache.
"""
from __future__ import annotations

import torch

from llm_playground.model.engine import sampler as sampling
from llm_playground.model.engine.device_batch import host_to_device
from llm_playground.model.engine.sampling_params import SamplingParams


def filtered_logits(logits: torch.Tensor, params: list[SamplingParams],
                    seen: list[list[int]]) -> torch.Tensor:
    """(N, V) logits after the sampler's filters, row i with params[i] and seen[i]: the
    repetition penalty, then (temperature > 0) the shift and temperature, top-k / top-p and
    min-p; -inf where a filter removed an id. Greedy rows stop after the penalty."""
    logits = logits.float()
    N = logits.shape[0]
    if any(p.repetition_penalty != 1.0 for p in params):
        logits = sampling.apply_repetition_penalty(logits.clone(), seen,
                                                   [p.repetition_penalty for p in params])
    rows = [i for i in range(N) if params[i].temperature > 0]
    if not rows:
        return logits
    dev = logits.device
    idx = host_to_device(rows, torch.long, dev)
    sub = logits.index_select(0, idx)                                          # (M, V)
    temp = host_to_device([params[i].temperature for i in rows], torch.float32, dev)
    sub = (sub - sub.amax(dim=-1, keepdim=True)) / temp.unsqueeze(1)
    if any(params[i].top_k > 0 or params[i].top_p < 1 for i in rows):
        sub = sampling.apply_top_k_top_p(
            sub, host_to_device([params[i].top_k for i in rows], torch.long, dev),
            host_to_device([params[i].top_p for i in rows], torch.float32, dev))
    if any(params[i].min_p > 0 for i in rows):
        sub = sampling.apply_min_p(sub, host_to_device([params[i].min_p for i in rows],
                                                       torch.float32, dev))
    return logits.index_copy(0, idx, sub)


def probs_of(filtered: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(N, V) the distribution drawn from: softmax, or greedy's point mass on the argmax."""
    if params.temperature == 0:
        one = torch.zeros_like(filtered)
        return one.scatter_(1, filtered.argmax(dim=-1, keepdim=True), 1.0)
    return filtered.softmax(dim=-1)


def draw_from(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(1,) one id drawn from probs (V,): torch.multinomial's one-sample path (argmax of p / q,
    q ~ Exp(1)), as the sampler draws, without a sync."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(dim=-1, keepdim=True)


def _uniforms(generators: list, rows: list[int], K: int, device) -> torch.Tensor:
    """(len(rows), K) uniforms, row i from generators[rows[i]] (one call when all share one)."""
    if all(generators[i] is generators[rows[0]] for i in rows):
        return torch.rand(len(rows), K, device=device, generator=generators[rows[0]])
    return torch.stack([torch.rand(K, device=device, generator=generators[i]) for i in rows])


def accept_rows(target: torch.Tensor, proposals: torch.Tensor, ks: torch.Tensor,
                params: list[SamplingParams], generators: list,
                draft_probs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """R verify rows at once, padded to K proposals. target (R, K+1, V): filtered target
    logits (`filtered_logits`); proposals (R, K) int64; ks (R,) int64 each row's own k <= K
    (positions past it are padding); draft_probs (R, K, V) the draft's filtered distributions
    (None: deterministic proposals, q = a point mass). Returns (ids (R, K+1) int64, m (R,)
    int64): row r emits ids[r, :m[r] + 1] (m[r] proposals accepted, then the target's token)."""
    R, K1, V = target.shape
    K, dev = K1 - 1, target.device
    ar = torch.arange(R, device=dev)
    valid = torch.arange(K, device=dev)[None, :] < ks[:, None]                     # (R, K)
    t = target.argmax(dim=-1)                                                      # (R, K+1)
    match = (t[:, :K] == proposals) & valid                                        # greedy
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    ids = t
    if sampled:
        p = target.softmax(dim=-1)                                                 # (R, K+1, V)
        if draft_probs is None:
            q = torch.zeros(R, K, V, device=dev).scatter_(2, proposals.unsqueeze(2), 1.0)
        else:
            q = draft_probs
        p_d = p[:, :K].gather(2, proposals.unsqueeze(2))[..., 0]                   # (R, K)
        q_d = q.gather(2, proposals.unsqueeze(2))[..., 0]
        u = torch.ones(R, K, device=dev)
        s_idx = host_to_device(sampled, torch.long, dev)
        u.index_copy_(0, s_idx, _uniforms(generators, sampled, K, dev))
        is_s = torch.zeros(R, dtype=torch.bool, device=dev).index_fill_(0, s_idx, True)
        # accept with probability min(1, p/q): u < p / q (q = 0 never rejects a p > 0)
        match = torch.where(is_s[:, None], (u * q_d < p_d) & valid, match)
    m = match.to(torch.int64).cumprod(dim=1).sum(dim=1)                            # (R,)
    if sampled:
        # at the first rejection draw from max(0, p - q) renormalised; after k accepted, p_k
        residual = torch.cat([(p[:, :K] - q).clamp_(min=0.0), p[:, K:]], dim=1)    # (R, K+1, V)
        bonus = torch.arange(K1, device=dev)[None, :] == ks[:, None]               # (R, K+1)
        residual = torch.where(bonus.unsqueeze(2), p, residual)
        r = residual[ar, m]                                                        # (R, V)
        total = r.sum(dim=-1, keepdim=True)
        r = torch.where(total > 0, r / total.clamp_min(1e-30), p[ar, m])
        toks = torch.cat([draw_from(r[i], generators[i]) for i in sampled])       # (S,)
        drawn = torch.cat([proposals, proposals.new_zeros(R, 1)], dim=1)           # (R, K+1)
        drawn[s_idx, m.index_select(0, s_idx)] = toks
        ids = torch.where(is_s[:, None], drawn, t)
    return ids, m


def draft_choose(logits: torch.Tensor, params: list[SamplingParams],
                 generators: list[torch.Generator | None]
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The draft's next token per row: logits (R, V) -> (ids (R,), probs (R, V) or None when
    every row is greedy). Greedy rows take the argmax (a point mass); others draw from the
    filtered draft distribution with the row's draft generator."""
    filt = filtered_logits(logits, params, [[] for _ in params])
    ids = filt.argmax(dim=-1)                                                      # (R,)
    if all(p.temperature == 0 for p in params):
        return ids, None
    probs = torch.zeros_like(filt)
    for i, p in enumerate(params):
        probs[i] = probs_of(filt[i:i + 1], p)[0]
        if p.temperature > 0:
            ids[i:i + 1] = draw_from(probs[i], generators[i])
    return ids, probs


DRAFT_SEED_SALT = 0x5DEECE66D     # the draft's random stream: another seed than the target's


def draft_key(key: tuple) -> tuple:
    """The runner's generator key of a draw's draft stream."""
    return ("draft",) + tuple(key)


def draft_seed(seed: int | None) -> int | None:
    """The seed of a request's draft stream (None stays nondeterministic)."""
    return None if seed is None else (seed ^ DRAFT_SEED_SALT) & (2**63 - 1)


def verify_requests(logits: torch.Tensor, requests: list, offsets: list[int], proposed: dict,
                    generator_of) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Every verification of a step, in one batched `accept_rows`: logits (N, V) the step's
    logits rows, requests its LogitsRequests, offsets[i] request i's first logits row,
    proposed[id(request)] = (draft proposals (k,), draft probs (k, V) or None) for the draft
    model's rows, generator_of(draw) the row's generator. Returns per verification (request
    index, ids (k+1,), m (1,))."""
    which = [i for i, req in enumerate(requests) if req.verify is not None]
    reqs = [requests[i] for i in which]
    K = max(r.verify.k for r in reqs)
    R, V, dev = len(reqs), logits.shape[1], logits.device
    rows, params, seen, props, dprobs = [], [], [], [], []
    for i, req in zip(which, reqs):
        v, draw = req.verify, req.draws[0]
        k = v.k
        # padding rows repeat the row's last one (their result is never read)
        rows += [offsets[i] + min(j, k) for j in range(K + 1)]
        params += [draw.params] * (K + 1)
        if draw.params.repetition_penalty != 1.0:   # row j saw the sequence and proposals 1..j
            seen += [list(draw.seen_ids) + list(v.proposals[:min(j, k)]) for j in range(K + 1)]
        else:
            seen += [[]] * (K + 1)
        if v.proposals:
            props.append(list(v.proposals) + [0] * (K - k))
            dprobs.append(None)
        else:
            dp, dq = proposed[id(req)]
            props.append(dp)
            dprobs.append(dq)
    target = filtered_logits(logits.index_select(0, host_to_device(rows, torch.long, dev)),
                             params, seen).view(R, K + 1, V)
    proposals = torch.stack([host_to_device(p, torch.long, dev) if isinstance(p, list)
                             else torch.cat([p, p.new_zeros(K - p.shape[0])]) for p in props])
    q = None
    if any(d is not None for d in dprobs):
        q = torch.zeros(R, K, V, device=dev)
        for r, (d, p) in enumerate(zip(dprobs, props)):
            if d is not None:
                q[r, :d.shape[0]] = d
            else:   # deterministic proposals: a point mass
                q[r].scatter_(1, proposals[r].view(K, 1), 1.0)
    ks = host_to_device([r.verify.k for r in reqs], torch.long, dev)
    ids, m = accept_rows(target, proposals, ks, [r.draws[0].params for r in reqs],
                         [generator_of(r.draws[0]) for r in reqs], q)
    return [(i, ids[r, :reqs[r].verify.k + 1], m[r:r + 1]) for r, i in enumerate(which)]


def verify_choices(logits: torch.Tensor, requests: list, offsets: list[int],
                   verified: list) -> tuple[list[int], sampling.PendingChoices] | None:
    """The TokenChoices of the step's verifications whose draw sets `logprobs`: for each of
    their k + 1 rows, what plain decoding's sampler considers there (the target's logits row j
    after the same filters, with the repetition penalty counting the sequence's ids and
    d_1..d_j) reported for the id emitted there (rows past the accepted ones are dropped on
    the host, `place_choices`). logits (N, V), offsets and verified as `verify_requests`
    takes and gives. Returns (request indices, their PendingChoices) or None; no sync."""
    want = [(i, v_ids) for i, v_ids, _ in verified
            if requests[i].draws[0].params.logprobs is not None]
    if not want:
        return None
    rows, params, seen = [], [], []
    for i, _ in want:
        req = requests[i]
        draw, v = req.draws[0], req.verify
        rows += range(offsets[i], offsets[i] + v.k + 1)
        params += [draw.params] * (v.k + 1)
        if draw.params.repetition_penalty != 1.0:   # never with a draft model (planner refuses)
            seen += [list(draw.seen_ids) + list(v.proposals[:j]) for j in range(v.k + 1)]
        else:
            seen += [[]] * (v.k + 1)
    idx = host_to_device(rows, torch.long, logits.device)
    ids = torch.cat([v_ids for _, v_ids in want])                                  # (sum k+1,)
    return [i for i, _ in want], sampling.choices_for(logits.index_select(0, idx), params,
                                                      seen, ids)


def place_choices(per_row: list, requests: list, tokens: list[list[int]],
                  which: list[int], pending: sampling.PendingChoices) -> list:
    """StepResult.choices with the verifications' TokenChoices put in (host side): request
    which[r] gets the first m + 1 of its k + 1 choices, parallel to its emitted tokens."""
    per_row = list(per_row) if per_row else [None] * len(requests)
    choices = pending.choices()
    o = 0
    for i in which:
        per_row[i] = choices[o:o + len(tokens[i])]
        o += requests[i].verify.k + 1
    return per_row
