"""Faults inside a step: which steps and requests a runner exception fails, and what they are told.

The engine (model/engine/engine.py, `Engine.step`) catches an exception out of the runner's
`submit` or `collect` (an error in the forward pass or in sampling, the device out of memory)
and calls `_fail_steps`, which `Engine` gets from the `StepFaults` mixin here. Without
overlap scheduling one step is in flight, and its requests fail. With overlap
(model/engine/run_ahead.py) two may be: step N, submitted last call and not yet applied, and
step N+1, submitted in this call. Both fail, whichever call raised:
  - step N+1's decodes read step N's draws on the device (deferred input ids), so a step N that
    failed leaves N+1 computing from garbage;
  - a device error is asynchronous: on CUDA it surfaces at whatever call comes next (N+1's
    launches, or the wait in `collect` of N), so which call raised says little about which
    step caused it;
  - the runner then forgets both (`ModelRunner.discard_in_flight`), so no later plan names a
    draw of theirs, and the engine has no half-applied step to reason about.
Requests outside the two steps are untouched and run on. `_fail_steps` discards the K/V the
steps wrote (never prefix-cached), has the block manager resend its table rows, and finishes the
failed requests' sequences through the engine's ordinary `_finish_sequence`
(model/engine/step_apply.py), which frees their blocks. This module does not decide how blocks
are allocated or freed, does not retry a step, and touches no tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.scheduler import ScheduledSeq
from llm_playground.model.engine.step_plan import StepPlan, StepResult


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


class StepFaults:
    """Engine mixin: the requests of the steps in flight fail together when the runner raises."""

    def _fail_steps(self, steps: list[InFlight], plan: StepPlan, error: Exception) -> StepResult:
        """The runner raised in the middle of a step (an exception in the forward pass or in
        sampling, the device out of memory; with overlap, out of `submit` of step N+1 or
        `collect` of step N, so both steps in flight are failed: N+1 may have read N's draws on
        the device, and an asynchronous device error can surface in either call): every request
        with a sequence in those steps finishes with FinishReason.ERROR (ErrorKind.OUT_OF_MEMORY
        or INTERNAL, its text so far kept), the K/V the steps wrote is never cached, their blocks
        are freed, the runner forgets the steps it still holds, and the engine goes on with the
        other requests. Returns the empty result the rows get."""
        kind, message = describe(error)
        self.runner.discard_in_flight()
        self._released_keys += plan.released_keys       # the runner may not have forgotten them
        self.bm.resend_table_rows()                     # the device may have missed some rows
        scheduled = [item for step in steps for item in step.scheduled]
        for item in scheduled:
            self.bm.discard_written(item.seq.seq_id, item.start)
        for rid in failed_requests(steps):
            self.groups.pop(rid, None)                  # its group gets no more calls
            req = self.requests.get(rid)
            for seq in (req.seqs if req is not None else ()):
                seq.num_pending = 0                     # its tokens on the device are dropped
                if not seq.is_finished:
                    self._finish_sequence(seq, FinishReason.ERROR, error=message, error_kind=kind)
        return StepResult()
