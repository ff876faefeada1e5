"""One chat generation as the engine worker follows it: text, ids and finish reason per sample,
and the live figures of the stats strip, updated from each StepReport.

The figures are this generation's own, taken from the engine's step times (the same sums
`playground generate` prints): the decode rate is this chat's decode tokens over the time of
the steps that produced them, so it stops counting when the answer stops (Esc, an error) and
has no value (None, shown as a dash) until a second token exists; the first token comes from
the prefill step, which is timed separately. Steps that carried only other requests' work (the
load test) change nothing here.

It does not post messages or touch the engine: engine_worker.py does both.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.playground.messages import ChatStats

SPARK_WINDOW = 60          # decode steps kept for the sparkline


@dataclass
class Generation:
    """A chat generation of `n` samples under the UI's `ticket` (engine id `request_id`)."""
    ticket: int
    request_id: int | str
    n: int
    prompt_len: int
    texts: list[str] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    choices: list[list] = field(default_factory=list)     # TokenChoices per sample (params.logprobs set)
    spec: list[list[bool]] = field(default_factory=list)  # per sample per token: accepted proposal
    reasons: list[FinishReason | None] = field(default_factory=list)
    error: str | None = None
    stats: ChatStats = field(default_factory=ChatStats)
    spark: deque = field(default_factory=lambda: deque(maxlen=SPARK_WINDOW))
    prefill_tokens: int = 0           # prompt tokens of the steps that prefilled this chat
    prefill_s: float = 0.0
    decode_tokens: int = 0            # this chat's tokens from decode steps
    decode_s: float = 0.0             # the time of those steps
    changed: bool = True              # something to show since the last published picture

    def __post_init__(self) -> None:
        self.texts = [""] * self.n
        self.ids = [[] for _ in range(self.n)]
        self.choices = [[] for _ in range(self.n)]
        self.spec = [[] for _ in range(self.n)]
        self.reasons = [None] * self.n
        self.stats.prompt_tokens = self.prompt_len

    @property
    def done(self) -> bool:
        """True when every sample has a finish reason."""
        return all(r is not None for r in self.reasons)

    def add_output(self, out: Any) -> int:
        """Take one RequestOutput of this request; returns how many of its tokens were decode
        tokens (the sample already had a token before this step)."""
        i = out.sample_index if 0 <= out.sample_index < self.n else 0
        decoded = len(out.new_token_ids) if self.ids[i] else max(0, len(out.new_token_ids) - 1)
        self.texts[i] += out.text_delta
        self.ids[i].extend(out.new_token_ids)
        if getattr(out, "choices", None):
            self.choices[i].extend(out.choices)
        flags = getattr(out, "speculated", None)
        self.spec[i].extend(flags if flags else [False] * len(out.new_token_ids))
        self.stats.spec_proposed += getattr(out, "spec_proposed", 0)
        self.stats.spec_accepted += getattr(out, "spec_accepted", 0)
        if getattr(out, "speculation_refused", None):
            self.stats.spec_refused = out.speculation_refused
        if out.finished:
            self.reasons[i] = out.finish_reason
        self.changed = True
        return decoded

    def absorb(self, report: Any, decoded: int, prefilled: bool) -> None:
        """Update the figures from one step: `decoded` of this chat's tokens came from decode
        in it; `prefilled` says the step worked on this chat's prompt."""
        st = self.stats
        st.output_tokens = sum(len(x) for x in self.ids)
        if self.request_id in report.ttft_s:
            st.ttft_s = report.ttft_s[self.request_id]
        if prefilled and report.num_prefill_tokens > 0 and report.step_time_s > 0:
            self.prefill_tokens += report.num_prefill_tokens
            self.prefill_s += report.step_time_s
            st.prefill_tps = self.prefill_tokens / self.prefill_s
        if decoded and report.step_time_s > 0:
            self.decode_tokens += decoded
            self.decode_s += report.step_time_s
            st.decode_tps = self.decode_tokens / self.decode_s
            self.spark.append(decoded / report.step_time_s)
            st.recent_decode_tps = tuple(self.spark)
            st.decode_steps += 1
        if any(any(f) for f in self.spec):
            st.speculated = tuple(map(tuple, self.spec))
        mine = [s for s in report.sequences if s.request_id == self.request_id]
        if mine:
            st.kv_blocks = len({b for s in mine for b in s.block_table if b >= 0})
            st.cached_prompt_tokens = max(s.num_cached_tokens for s in mine)
        st.prefix_hits_total = report.cache.prefix_hits
        par = getattr(report, "parallel", None)       # tensor parallel: the step's collectives
        if par is not None and par.comm_calls:
            st.comm_ms = par.comm_s * 1e3
        st.prefix_queries_total = report.cache.prefix_queries

    def snapshot(self) -> ChatStats:
        """A copy of the figures (the message must not share the live object)."""
        return ChatStats(**{f.name: getattr(self.stats, f.name) for f in fields(ChatStats)})
