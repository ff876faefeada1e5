"""Why a request ended: `FinishReason` and, for errors, `ErrorKind`. Types, not guessed strings.

Both are `str` enums, so a report stays plain data (JSON-able, picklable) and a value prints as
its name. Every place that ends a sequence picks exactly one reason:

    STOP_STRING      a stop string appeared in the text (the text before it is kept)
    END_OF_SEQUENCE  the model's end-of-sequence id, or one of the request's stop ids
    MAX_TOKENS       the request's max_tokens was reached
    CONTEXT_FULL     the model's context (max_model_len) was reached
    KV_CACHE_FULL    the sequence outgrew the whole KV cache (it keeps what it generated)
    ABORTED          the caller aborted it (Esc in the UI, a client that went away)
    ERROR            it could not run, or its step failed on the device (an exception in the
                     forward pass, out of memory); `ErrorKind` says which way, the message why

This module only names outcomes; request_rules.py and the engine decide them.
"""
from __future__ import annotations

from enum import Enum


class FinishReason(str, Enum):
    """Why a sequence finished (see the module docstring)."""
    STOP_STRING = "stop_string"
    END_OF_SEQUENCE = "end_of_sequence"
    MAX_TOKENS = "max_tokens"
    CONTEXT_FULL = "context_full"
    KV_CACHE_FULL = "kv_cache_full"
    ABORTED = "aborted"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    @property
    def openai(self) -> str:
        """The OpenAI API's coarser name: stop / length / abort / error."""
        return _OPENAI[self]

    @property
    def is_length(self) -> bool:
        """Ended by a size limit (max tokens, context or KV cache), not by the model or caller."""
        return self in (FinishReason.MAX_TOKENS, FinishReason.CONTEXT_FULL,
                        FinishReason.KV_CACHE_FULL)

    def describe(self, max_tokens: int | None = None) -> str:
        """A short phrase for a person: 'stopped at max tokens (256)', ..."""
        if self is FinishReason.MAX_TOKENS and max_tokens is not None:
            return f"stopped at max tokens ({max_tokens})"
        return _DESCRIBE[self]


class ErrorKind(str, Enum):
    """Which way a request failed (FinishReason.ERROR)."""
    INVALID_REQUEST = "invalid_request"            # empty prompt, ids outside the vocabulary, bad params
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"   # the prompt does not fit the context
    KV_CACHE_TOO_SMALL = "kv_cache_too_small"      # the prompt (or the sequence) needs more than the cache
    UNSUPPORTED = "unsupported"                    # a combination the engine refuses (says which)
    OUT_OF_MEMORY = "out_of_memory"                # the device ran out of memory in the step; retry smaller
    INTERNAL = "internal"                          # a bug or a device fault: the message has the exception
    UNAVAILABLE = "unavailable"                    # no engine left to run it (a server's replicas all died)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of_exception(cls, error: BaseException) -> "ErrorKind":
        """OUT_OF_MEMORY for an allocation failure (MemoryError, torch.cuda.OutOfMemoryError,
        torch's CPU "can't allocate memory"), INTERNAL for anything else. Reads names and
        messages only: this module imports no torch."""
        text = str(error).lower()
        if (isinstance(error, MemoryError)
                or any(c.__name__ == "OutOfMemoryError" for c in type(error).__mro__)
                or "out of memory" in text or "can't allocate memory" in text):
            return cls.OUT_OF_MEMORY
        return cls.INTERNAL


_OPENAI = {FinishReason.STOP_STRING: "stop", FinishReason.END_OF_SEQUENCE: "stop",
           FinishReason.MAX_TOKENS: "length", FinishReason.CONTEXT_FULL: "length",
           FinishReason.KV_CACHE_FULL: "length", FinishReason.ABORTED: "abort",
           FinishReason.ERROR: "error"}
_DESCRIBE = {FinishReason.STOP_STRING: "stopped at a stop string",
             FinishReason.END_OF_SEQUENCE: "end of sequence",
             FinishReason.MAX_TOKENS: "stopped at max tokens",
             FinishReason.CONTEXT_FULL: "stopped: the model's context is full",
             FinishReason.KV_CACHE_FULL: "stopped: the KV cache cannot hold a longer answer",
             FinishReason.ABORTED: "stopped (Esc); the text so far is kept",
             FinishReason.ERROR: "error"}
