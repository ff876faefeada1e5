"""Prompt lookup: propose the tokens that followed an earlier occurrence of the sequence's tail.

`propose(ids, k, n_max, n_min)` looks for the last n tokens of `ids` (n from n_max down to
n_min) earlier in `ids` and returns up to k tokens that followed the latest such match (vLLM's
`ngram` proposer and transformers' prompt-lookup decoding do the same). Summaries, extractions
and code edits copy long spans of their prompt, so the proposals are often right and a verify
step then yields several tokens for the price of one forward.

Cost: a scan of the sequence per step, in numpy (O(length x n_max)); `NgramIndex` keeps a
sequence's ids as a growing numpy array so the scan does not rebuild it from a list each step.
This module is plain host code: no torch, no model, no engine state.
"""
from __future__ import annotations

import numpy as np


def propose(ids, k: int, n_max: int = 4, n_min: int = 1) -> list[int]:
    """Up to `k` ids that followed the latest earlier occurrence of the longest tail n-gram
    (n_max >= n >= n_min) of `ids`; [] when none recurs. ids: a sequence or (N,) int array."""
    a = np.asarray(ids, dtype=np.int64)
    N = len(a)
    for n in range(min(n_max, N - 1), n_min - 1, -1):
        tail = a[N - n:]
        # windows a[i:i+n] for i in 0..N-n-1 (the tail itself, at i = N - n, is excluded)
        hits = np.ones(N - n, dtype=bool)
        for j in range(n):
            hits &= a[j:N - n + j] == tail[j]
        where = np.flatnonzero(hits)
        if len(where):
            start = int(where[-1]) + n               # the latest match: its continuation
            return a[start:start + k].tolist()
    return []


class NgramIndex:
    """One sequence's ids as a growing numpy buffer (amortised O(1) appends) for `propose`."""

    __slots__ = ("buf", "n")

    def __init__(self) -> None:
        self.buf = np.zeros(64, dtype=np.int64)
        self.n = 0

    def sync(self, prompt: list[int], output: list[int]) -> np.ndarray:
        """The sequence's ids (prompt + output) as a numpy view; appends what is new since the
        last call (a sequence only grows; a shorter one is rebuilt)."""
        total = len(prompt) + len(output)
        if total < self.n:
            self.n = 0
        if total > len(self.buf):
            grown = np.zeros(max(total, 2 * len(self.buf)), dtype=np.int64)
            grown[:self.n] = self.buf[:self.n]
            self.buf = grown
        p = len(prompt)
        if self.n < p:
            self.buf[self.n:p] = prompt[self.n:]
            self.n = p
        if self.n < total:
            self.buf[self.n:total] = output[self.n - p:]
            self.n = total
        return self.buf[:total]
