"""Dataclass messages that the background workers post to the app.

The engine thread (playground/engine_worker.py) and the tokenizer-training thread post these; the
app routes them to the views. High-rate messages (progress, per-step stats, cache snapshots) carry
*cumulative* state, so a newer one can replace an older one still waiting in the queue
(`can_replace`): when the UI falls behind, it skips to the latest picture instead of lagging.
Messages that end something (finished, failed) never coalesce.

This module holds no logic beyond that; it does not import torch or the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from llm_playground.model.engine.reports import CacheReport, SequenceReport


@dataclass
class ModelInfo:
    """What the header, the KV view and the chat need to know about the loaded model."""
    name: str
    path: str
    device: str
    dtype: str                       # "float32", "bfloat16", ...
    dtype_bytes: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position: int
    num_blocks: int
    block_size: int
    bytes_per_block: int
    tokenizer: Any                   # bpe.Tokenizer (read-only use from the UI thread)
    chat_template: str | None
    pattern: str = "dense"
    kv_dtype: str = ""               # "" = the compute dtype; "int8" / "fp8": 8-bit codes + scales
    kv_scale_bytes: int = 0          # bytes of scale per (token, KV head) for an 8-bit cache
    speculate: str = "off"           # the engine's speculative decoding (--speculate)


@dataclass
class LoadProgress(Message):
    """Model loading: the current stage and how far it is (coalesces)."""
    stage: str                       # "fetching", "reading weights", ...
    fraction: float | None           # 0..1, None = unknown

    def can_replace(self, message: Message) -> bool:
        """True for any older LoadProgress: the newer one supersedes it."""
        return isinstance(message, LoadProgress)


@dataclass
class ModelReady(Message):
    """The model is loaded and the engine runs; what the views need to know about it."""
    info: ModelInfo


@dataclass
class LoadFailed(Message):
    """The model could not be loaded; the error in one line."""
    error: str                       # one line, says what to do


@dataclass
class ChatStats:
    """Live numbers for one chat generation (cumulative, so messages can coalesce)."""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float | None = None
    # None until measured: no prefill step yet / fewer than two tokens (the first comes from
    # the prefill step). Rates are this chat's tokens over the time of the steps that made them.
    prefill_tps: float | None = None
    decode_tps: float | None = None
    recent_decode_tps: tuple[float, ...] = ()  # this chat's recent decode steps, oldest first
    kv_blocks: int = 0               # physical blocks held by this chat's sequences (last seen)
    cached_prompt_tokens: int = 0    # prompt tokens served by the prefix cache
    prefix_hits_total: int = 0       # engine-wide, cumulative
    prefix_queries_total: int = 0
    comm_ms: float | None = None     # tensor parallel: the last step's collectives (rank 0), ms
    # Speculative decoding: this chat's decode steps, the proposals its own samples verified
    # and how many the target accepted (RequestOutput's counts: other requests' rows, the load
    # test's, are not in them), per sample per token whether it was an accepted proposal (F7
    # speculation), and why this answer decodes without speculation when the engine refused it.
    decode_steps: int = 0
    spec_proposed: int = 0
    spec_accepted: int = 0
    speculated: tuple[tuple[bool, ...], ...] = ()
    spec_refused: str | None = None


@dataclass
class ChatProgress(Message):
    """A chat generation so far: text and ids per sample, and live stats (coalesces per ticket)."""
    ticket: int                      # the UI's id for this generation (not the engine's request id)
    texts: tuple[str, ...]           # text so far, one per sample
    token_ids: tuple[tuple[int, ...], ...]
    stats: ChatStats
    finish_reasons: tuple[object, ...] = ()   # per sample: FinishReason once it ended, else None

    def can_replace(self, message: Message) -> bool:
        """True for an older ChatProgress of the same ticket."""
        return isinstance(message, ChatProgress) and message.ticket == self.ticket


@dataclass
class ChatFinished(Message):
    """A chat generation ended: final texts, ids, stats, finish reasons, and any error."""
    ticket: int
    texts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    stats: ChatStats
    finish_reasons: tuple[object, ...]      # FinishReason (model/engine/outcomes.py) per sample
    error: str | None = None         # one line for the user; the produced text is kept


@dataclass
class ChoicesUpdated(Message):
    """What the sampler considered for each token of a chat generation so far, per sample
    (engine TokenChoices, plain numpy data); cumulative, so it coalesces per ticket."""
    ticket: int
    choices: tuple[tuple[Any, ...], ...]     # per sample: one TokenChoice per generated token

    def can_replace(self, message: Message) -> bool:
        """True for an older ChoicesUpdated of the same ticket."""
        return isinstance(message, ChoicesUpdated) and message.ticket == self.ticket


@dataclass
class LoadStats:
    """What the load test (playground/load_test.py) has shown so far, counted from its reports."""
    requests: int = 0
    samples: int = 0                 # sequences: requests with n = 2 count twice
    pool_blocks: int = 0             # the pool it runs in
    chat_pool_blocks: int = 0        # the chat's pool (the same one unless own_pool)
    own_pool: bool = False           # a small pool of its own, so that the load fills it
    allocated: int = 0               # blocks that went from no owner to an owner
    freed: int = 0                   # blocks that went from an owner to none
    peak_used: int = 0               # most blocks owned at once
    peak_shared: int = 0             # most blocks owned by several sequences at once
    copy_on_write: int = 0           # shared blocks a sequence replaced with its own copy
    preemptions: int = 0
    finished: int = 0                # requests finished
    done: bool = False


@dataclass
class CacheUpdated(Message):
    """A snapshot of the KV cache, the live sequences and the queue lengths (coalesces)."""
    cache: CacheReport
    sequences: list[SequenceReport] = field(default_factory=list)
    num_running: int = 0
    num_waiting: int = 0
    synthetic_running: int = 0       # requests from the "load" action still running
    load: LoadStats | None = None    # the load test's counts, while its picture is shown
    parallel: object | None = None   # the step's ParallelReport (tensor / data parallel), or None

    def can_replace(self, message: Message) -> bool:
        """True for any older CacheUpdated."""
        return isinstance(message, CacheUpdated)


@dataclass
class EngineNotice(Message):
    """Something the user should read (bad input, out of blocks...). Never fatal to the app."""
    text: str
    severity: str = "warning"        # "information" / "warning" / "error"


@dataclass
class SpeculateChanged(Message):
    """The engine now decodes with this speculation setting (`off`, `ngram:K`, ...)."""
    spec: str


@dataclass
class PatternChanged(Message):
    """The engine now runs new requests with this attention pattern."""
    spec: str


@dataclass
class AttentionReady(Message):
    """One layer and head's attention weights over the last prompt's tokens."""
    layer: int
    head: int
    weights: list[list[float]]       # (T, T) rows = queries, cols = keys
    token_count: int


@dataclass
class TrainProgress(Message):
    """Tokenizer training progress: a fraction (None = unknown) and a line of text (coalesces)."""
    fraction: float | None
    text: str

    def can_replace(self, message: Message) -> bool:
        """True for any older TrainProgress."""
        return isinstance(message, TrainProgress)


@dataclass
class TrainFinished(Message):
    """Tokenizer training ended: the new tokenizer, its name and the time it took."""
    tokenizer: Any
    name: str
    seconds: float


@dataclass
class TrainFailed(Message):
    """Tokenizer training failed; the error in one line."""
    error: str


@dataclass
class TokenizerLoaded(Message):
    """A reference tokenizer finished loading; its entry for the Tokenizers tab."""
    entry: Any                       # playground.tokenizer_sources.TokenizerEntry


@dataclass
class TokenizerUnavailable(Message):
    """A reference tokenizer could not be loaded, and why."""
    name: str
    error: str
