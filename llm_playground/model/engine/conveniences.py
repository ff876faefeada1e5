"""The engine's convenience API: run one request to its end, beam search, one head's attention.

`EngineConveniences` is a mixin of `Engine` (model/engine/engine.py). Everything here is built
on the engine's public calls (`add_request`, `step`) and adds no rule of its own:
`iter_outputs` steps until one request is done and yields its outputs, `generate` returns sample
0's token ids, `add_beam_request` / `beam_search` queue or run a `BeamGroup`
(model/engine/beam_search.py), and `attention_weights` asks the runner for one head's attention
matrix over a prompt on the reference path. A request that finishes with an error raises
`RequestError` from the calls that return a result (`generate`, `beam_search`).
It does not schedule, apply a step's tokens or own any state: a server or the UI that serves
several requests at once drives `Engine.step()` itself and reads its reports.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from llm_playground.model.engine.beam_search import BeamGroup, BeamHypothesis, BeamSearchParams
from llm_playground.model.engine.reports import RequestOutput, StepReport
from llm_playground.model.engine.sampling_params import SamplingParams


class RequestError(RuntimeError):
    """A request finished with an error (raised by the convenience `generate`)."""


class EngineConveniences:
    """Engine mixin: call-and-wait wrappers over `add_request` and `step`."""

    def iter_outputs(self, prompt_ids: list[int], params: SamplingParams | None = None,
                     pattern: str | None = None,
                     on_report: Callable[[StepReport], None] | None = None) -> Iterator[RequestOutput]:
        """Run the engine until this request finishes, yielding its outputs as they come."""
        yield from self._run(self.add_request(prompt_ids, params, pattern), on_report)

    def _run(self, rid: int | str, on_report) -> Iterator[RequestOutput]:   # steps until rid is done
        while rid in self.requests or any(o.request_id == rid for o in self._pending):
            report = self.step()
            if on_report is not None:
                on_report(report)
            yield from (out for out in report.outputs if out.request_id == rid)

    def generate(self, prompt_ids: list[int], params: SamplingParams | None = None,
                 on_report: Callable[[StepReport], None] | None = None,
                 pattern: str | None = None) -> list[int]:
        """Token ids of sample 0 (ids of all samples: use `iter_outputs`). Raises RequestError on error."""
        ids: list[int] = []
        for out in self.iter_outputs(prompt_ids, params, pattern, on_report):
            if out.error:
                raise RequestError(out.error)
            if out.sample_index == 0:
                ids += out.new_token_ids
        return ids

    def add_beam_request(self, prompt_ids: list[int], params: BeamSearchParams,
                         pattern: str | None = None, request_id: int | str | None = None) -> int | str:
        """Queue a beam search (see model/engine/beam_search.py); its outputs come when it ends, one
        RequestOutput per hypothesis, best first (sample_index = rank)."""
        group = BeamGroup(params)
        return self.add_request(prompt_ids, group.sampling_params, pattern, request_id, group)

    def beam_search(self, prompt_ids: list[int], params: BeamSearchParams,
                    on_report: Callable[[StepReport], None] | None = None,
                    pattern: str | None = None) -> list[BeamHypothesis]:
        """Run one beam search to the end: hypotheses best first. Raises RequestError on error."""
        group = BeamGroup(params)
        rid = self.add_request(prompt_ids, group.sampling_params, pattern, group=group)
        for out in self._run(rid, on_report):
            if out.error:
                raise RequestError(out.error)
        return group.results

    def attention_weights(self, prompt_ids: list[int], layer: int, head: int) -> list[list[float]]:
        """One head's attention matrix over a prompt under the engine's pattern (reference path)."""
        if not prompt_ids:
            raise ValueError("attention_weights needs at least one token")
        return self.runner.attention_weights(prompt_ids, layer, head, self.pattern.spec,
                                             self.bm.block_size)
