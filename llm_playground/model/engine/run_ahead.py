"""Overlap scheduling's rules: which rows run ahead of their result, and when to wait.

With overlap (EngineConfig.overlap) the engine plans step N+1 while the device runs step N
(docs/RUNTIME.md). After a step is submitted, `mark_run_ahead` decides for each logits row
whether its sequence decodes the drawn token next step without waiting for it on the host:
yes when the sequence's group allows it (`SequenceGroup.can_run_ahead`: not beam search, not
the prompt row that forks n > 1 samples, not a repetition penalty, not a speculative
verification, whose next plan depends on how many proposals it accepts) and the token is not the
last by length (max_tokens or the context end: known in advance, so no row is wasted there).
Such a sequence counts the token as pending (`Sequence.num_pending`, `pending_draw`: which draw
of the step holds it), so the scheduler plans its next decode and the batch builder names the
id as a deferred input. Every other row's sequence waits: it has nothing to compute until its
result lands. `has_ready_work` says whether the next step has anything to run without the
in-flight result; when not, the engine collects the step in the same call.
A row whose draws ask what the sampler considered (SamplingParams.logprobs) runs ahead like any
other: its TokenChoices are copied to the host beside the ids (model/engine/model_runner.py).
This module only reads and marks sequences; it does not schedule, plan or touch the runner.
"""
from __future__ import annotations

from llm_playground.model.engine.scheduler import Scheduler
from llm_playground.model.engine.sequence import Sequence


def last_by_length(seq: Sequence, max_model_len: int) -> bool:
    """Whether the token `seq`'s row draws next certainly ends it (max_tokens or the context)."""
    n_out = len(seq.output_ids) + seq.num_pending + 1       # (no properties: runs per row)
    return (n_out >= seq.params.max_tokens
            or (not seq.pattern.evicts and len(seq.prompt_ids) + n_out >= max_model_len))


def mark_run_ahead(rows: list[list], max_model_len: int, spec=None) -> None:
    """rows: per logits row [sequence, group, index of its first draw, runs ahead]; sets the
    last entry (and the sequence's pending count and draw) for the rows that run ahead.
    `spec` (a SpecPlanner or None): sequences that verify next step wait for their id."""
    for row in rows:
        seq, group, draw, _ = row
        if seq.spec_k:          # a verification: the next plan depends on what it accepts
            continue
        if spec is not None and spec.wants_next(seq, group):
            continue
        if group.can_run_ahead(seq) and not last_by_length(seq, max_model_len):
            seq.num_pending += 1
            seq.pending_draw = draw
            row[3] = True


def has_ready_work(scheduler: Scheduler) -> bool:
    """Whether the next step has something to run without the in-flight step's result."""
    return bool(scheduler.waiting) or any(s.num_computed < s.num_tokens_ahead
                                          for s in scheduler.running)
