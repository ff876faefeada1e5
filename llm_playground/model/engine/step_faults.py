"""Faults inside a step: which steps and requests a runner exception fails, and what they are told.

The engine (model/engine/engine.py, `Engine._fail_steps`) catches an exception out of the
runner's `submit` or `collect` (an error in the forward pass or in sampling, the device out of
memory). Without overlap scheduling one step is in flight, and its requests fail. With overlap
(model/engine/run_ahead.py) two may be: step N, submitted last call and not yet applied, and
step N+1, submitted in this call. Both fail, whichever call raised:
  - step N+1's decodes read step N's draws on the device (deferred input ids), so a step N that
    failed leaves N+1 computing from garbage;
  - a device error is asynchronous: on CUDA it surfaces at whatever call comes next (N+1's
    launches, or the wait in `collect` of N), so which call raised says little about which
    step caused it;
  - the runner then forgets both (`ModelRunner.discard_in_flight`), so no later plan names a
    draw of theirs, and the engine has no half-applied step to reason about.
Requests outside the two steps are untouched and run on. This module decides nothing about
blocks or the prefix cache (the engine discards the K/V the steps wrote and frees their blocks)
and touches no tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm_playground.model.engine.outcomes import ErrorKind
from llm_playground.model.engine.scheduler import ScheduledSeq


@dataclass
class InFlight:
    """A step submitted to the runner whose result is not applied yet: per logits row
    [sequence, group, index of its first draw, runs ahead] (Engine._plan) and the scheduled
    sequences with the positions the step computes (what a fault must discard)."""
    rows: list[list]
    scheduled: list[ScheduledSeq]


def describe(error: BaseException) -> tuple[ErrorKind, str]:
    """The ErrorKind and the one-line message the failed requests get."""
    kind = ErrorKind.of_exception(error)
    detail = (str(error).strip().splitlines() or [""])[0][:200]
    message = f"the step failed on the device ({type(error).__name__}: {detail})"
    if kind is ErrorKind.OUT_OF_MEMORY:
        message += "; retry with fewer requests at once, or restart with a smaller --kv-budget"
    return kind, message


def failed_requests(steps: list[InFlight]) -> list[int | str]:
    """The request ids with a sequence in any of `steps`, each once, in step order."""
    return list(dict.fromkeys(item.seq.request_id for step in steps for item in step.scheduled))
