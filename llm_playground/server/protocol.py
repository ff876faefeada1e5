"""The request bodies of the OpenAI API as pydantic models, and their SamplingParams.

Strict types (a string is not a number, 1.5 is not an integer) and OpenAI's ranges, checked by
pydantic so a bad field answers 400 naming it (server/errors.py). Fields the models do not know
are ignored, as vLLM does (`extra="ignore"`). Beyond OpenAI's fields, vLLM's sampling extensions
`top_k`, `min_p`, `repetition_penalty`, `ignore_eos` and `stop_token_ids` are accepted.
Known OpenAI fields this engine cannot honour (`echo`, `best_of` > n, non-zero presence or
frequency penalties, `logit_bias`, `suffix`, tools) are refused with a 400 saying so rather than
silently ignored. This module does not tokenize or talk to the engine: `sampling_params` builds
the engine's SamplingParams once the route knows the prompt's length.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.server.errors import APIError

MAX_N = 128            # parallel samples per request: beyond it one request could fill the pool
MAX_LOGPROBS = 20      # OpenAI's top_logprobs limit (vLLM's default too)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(_Body):
    """`stream_options`: include_usage adds a last chunk with the usage."""
    include_usage: bool = False


class _Common(_Body):
    """Fields shared by /v1/completions and /v1/chat/completions."""
    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0.0, le=2.0)      # OpenAI's default and range
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM's extensions
    top_k: int = Field(0, ge=-1)                          # -1 or 0 = off
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None

    def refuse_unsupported(self) -> None:
        """400 for a known field whose value this engine cannot honour."""
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(400, f"{name} is not supported by this engine (use "
                               "repetition_penalty)", param=name, code="unsupported")
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported by this engine", param="logit_bias",
                           code="unsupported")
        if isinstance(self.stop, list) and len(self.stop) > 16:
            raise APIError(400, "stop: at most 16 stop strings", param="stop")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if any(not s for s in stops):
            raise APIError(400, "stop strings must not be empty", param="stop")

    def sampling_params(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        """The engine's SamplingParams for this body (max_tokens already resolved)."""
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        try:
            return SamplingParams(temperature=self.temperature, top_p=self.top_p,
                                  top_k=max(self.top_k, 0), min_p=self.min_p,
                                  repetition_penalty=self.repetition_penalty,
                                  max_tokens=max_tokens, seed=self.seed, stop=tuple(stops),
                                  stop_token_ids=tuple(self.stop_token_ids or ()),
                                  ignore_eos=self.ignore_eos, n=self.n, logprobs=logprobs)
        except ValueError as e:        # SamplingParams names the field
            raise APIError(400, str(e), param=str(e).split(" ")[0]) from None

    @property
    def include_usage(self) -> bool:
        """True when the stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    """POST /v1/completions."""
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)              # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def refuse_unsupported(self) -> None:
        """400 for echo, best_of other than n, suffix (and the common ones)."""
        super().refuse_unsupported()
        if self.echo:
            raise APIError(400, "echo is not supported by this server", param="echo",
                           code="unsupported")
        if self.best_of is not None and self.best_of != self.n:
            raise APIError(400, "best_of other than n is not supported", param="best_of",
                           code="unsupported")
        if self.suffix:
            raise APIError(400, "suffix is not supported by this server", param="suffix",
                           code="unsupported")


class TextPart(_Body):
    """One text part of a message's content list."""
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    """One chat message: a role and its content (a string or text parts)."""
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        """The content as one string (text parts joined)."""
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(_Common):
    """POST /v1/chat/completions."""
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)            # None = up to the context's end
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    tools: list | None = None

    def refuse_unsupported(self) -> None:
        """400 for tools, and top_logprobs without logprobs (and the common ones)."""
        super().refuse_unsupported()
        if self.tools:
            raise APIError(400, "tools are not supported by this server", param="tools",
                           code="unsupported")
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")

    @property
    def requested_max_tokens(self) -> int | None:
        """max_completion_tokens, else max_tokens, else None (the context's rest)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
