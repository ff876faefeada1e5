"""What the sampler considered for one generated token, as plain data (numpy, ints, strings).

A request that sets `SamplingParams.logprobs = k` (k >= 0) gets one `TokenChoice` per generated
token (`RequestOutput.choices`, parallel to `new_token_ids`). The sampler fills it in the same
step that draws the token, from the same logits (model/engine/sampler.py): no second forward.

Each choice lists the filter stages in the order the sampler applied them to this token:
`model` (the softmax of the raw logits) first, then those that were on for the request:
`repetition_penalty`, `temperature` (not when it is 1.0), `top_k`, `top_p`, `min_p`, and for
greedy requests a final `argmax` (the point mass the id is taken from). Per stage it keeps the
log-probability of every candidate (-inf = removed by that stage or an earlier one), the
entropy of the whole distribution and how many ids it still allows. The candidates are the k
best ids of every stage plus the id drawn, sorted by the last stage, then by the model's own
probability: so `top(stage, k)` is exact for every stage, which is what an OpenAI-style
`logprobs` / `top_logprobs` answer needs (stage 0 = the model's log-probabilities, as vLLM
returns by default; the last stage = the distribution the id was drawn from).

`choices_per_row` groups a step's choices (one per draw) by logits row, as StepResult carries them.
This module does not compute anything (the sampler does) and imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODEL = "model"
REPETITION_PENALTY = "repetition_penalty"
TEMPERATURE = "temperature"
TOP_K = "top_k"
TOP_P = "top_p"
MIN_P = "min_p"
ARGMAX = "argmax"
STAGE_ORDER = (MODEL, REPETITION_PENALTY, TEMPERATURE, TOP_K, TOP_P, MIN_P, ARGMAX)
STAGE_LABELS = {MODEL: "model", REPETITION_PENALTY: "rep pen", TEMPERATURE: "temp",
                TOP_K: "top-k", TOP_P: "top-p", MIN_P: "min-p", ARGMAX: "greedy"}


@dataclass(frozen=True, eq=False)
class TokenChoice:
    """One generated token: the candidates' log-probabilities after each filter stage, the id
    drawn, and each stage's entropy (see the module docstring)."""
    token_id: int                        # the id the sampler drew (== the id the engine emitted)
    stages: tuple[str, ...]              # (S,) stage names in the order applied; stages[0] == MODEL
    candidate_ids: np.ndarray            # (C,) int64, best in the last stage first
    logprobs: np.ndarray                 # (S, C) float32; -inf where a stage removed the id
    entropy: np.ndarray                  # (S,) float32, nats, of each stage's whole distribution
    kept: np.ndarray                     # (S,) int64 ids with a finite logit after each stage
    k: int                               # how many candidates per stage were asked for

    @property
    def drawn_index(self) -> int:
        """Position of the drawn id among the candidates."""
        return int(np.flatnonzero(self.candidate_ids == self.token_id)[0])

    @property
    def probs(self) -> np.ndarray:
        """(S, C) float32 probabilities (0 where removed)."""
        return np.exp(self.logprobs)

    def stage_index(self, stage: int | str) -> int:
        """Index of a stage given by position (negative counts from the end) or by name."""
        if isinstance(stage, str):
            return self.stages.index(stage)
        return range(len(self.stages))[stage]

    def logprob(self, stage: int | str = 0) -> float:
        """The drawn id's log-probability at a stage (0 = the model's; -1 = the one drawn from)."""
        return float(self.logprobs[self.stage_index(stage), self.drawn_index])

    def top(self, stage: int | str = 0, k: int | None = None) -> list[tuple[int, float]]:
        """The k (default: self.k) best (id, logprob) at a stage, best first; ids the stage
        removed are left out."""
        s = self.stage_index(stage)
        k = self.k if k is None else min(k, self.k)
        row = self.logprobs[s]
        order = np.argsort(-row, kind="stable")[:k]
        return [(int(self.candidate_ids[j]), float(row[j])) for j in order if np.isfinite(row[j])]


def choices_per_row(num_rows: int, rows: list[int], choices: list) -> list:
    """Per logits row, its draws' TokenChoices (parallel to StepResult.tokens[i]), or None for
    a row none of whose draws asked."""
    per_row: list = [None] * num_rows
    for i, choice in zip(rows, choices):
        if per_row[i] is None:
            per_row[i] = []
        per_row[i].append(choice)
    return [None if r is None or all(c is None for c in r) else r for r in per_row]
