"""Per-request sampling settings. Validation only; the sampler lives in model/engine/sampler.py.

Types are checked, not coerced silently: integer fields take Python or numpy integers (never a
bool or a float such as 1.5), number fields take real numbers (not bools or strings); a single
stop string is accepted as a one-element tuple. A bad value raises ValueError naming the field.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1     # what torch.Generator.manual_seed accepts


@dataclass
class SamplingParams:
    """How one request samples and stops: temperature, top-k/top-p/min-p, repetition penalty,
    token limit, seed, stop strings and ids, the number of parallel samples, and whether each
    token reports what the sampler considered (`logprobs`)."""
    temperature: float = 0.0          # 0 = greedy (argmax), the exact mode the oracle tests use
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0                # 1.0 = off
    repetition_penalty: float = 1.0   # 1.0 = off; >1 divides positive logits of seen tokens (HF rule)
    min_p: float = 0.0                # 0.0 = off; drops ids below min_p x the top id's probability (HF rule)
    max_tokens: int = 256             # new tokens at most
    seed: int | None = None           # per-request generator seed; None = nondeterministic
    stop: tuple[str, ...] = ()        # stop strings (checked on the detokenized text, not included in output)
    stop_token_ids: tuple[int, ...] = ()  # extra stop ids besides the model's EOS
    ignore_eos: bool = False          # benchmarks generate a fixed length
    n: int = 1                        # parallel samples sharing the prompt's KV blocks
    # None = off (no extra work); k >= 0: each generated token reports the k best candidates of
    # every filter stage and the drawn id (RequestOutput.choices: model/engine/token_choice.py)
    logprobs: int | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            setattr(self, name, as_number(name, getattr(self, name)))
        for name in ("top_k", "max_tokens", "n"):
            setattr(self, name, as_integer(name, getattr(self, name)))
        if self.seed is not None:
            self.seed = as_integer("seed", self.seed)
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be a bool, got {self.ignore_eos!r}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        if isinstance(self.stop_token_ids, (str, bytes)) or not _iterable(self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be a sequence of ints, got {self.stop_token_ids!r:.60}")
        if not _iterable(self.stop):
            raise ValueError(f"stop must be a str or a sequence of str, got {self.stop!r:.60}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):   # NaN fails too
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            raise ValueError(f"repetition_penalty must be a finite number > 0, "
                             f"got {self.repetition_penalty}")
        if not 0.0 <= self.min_p <= 1.0:                                   # NaN fails too
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int)
                                           or self.logprobs < 0):
            raise ValueError(f"logprobs must be None or an int >= 0, got {self.logprobs!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX - (self.n - 1):
            # sample i draws with seed + i (model/sampler.make_generator)
            raise ValueError(f"seed must be between {SEED_MIN} and {SEED_MAX - (self.n - 1)}, "
                             f"got {self.seed}")
        self.stop = tuple(self.stop)
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty str, got {s!r}")
            try:
                s.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"stop string {s!r} is not valid UTF-8 text: {e}") from None
        self.stop_token_ids = tuple(as_integer("stop_token_ids entry", t) for t in self.stop_token_ids)


def as_integer(name: str, value) -> int:
    """`value` as an int when it is a Python or numpy integer (not a bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def as_number(name: str, value) -> float:
    """`value` as a float when it is a real number (not a bool, not a string), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _iterable(value) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True
