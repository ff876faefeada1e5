"""Typed, bounded reads of model metadata (GGUF keys, config.json fields) before anything is built.

Both readers (gguf_file.py, hf_folder.py) read every number through these functions, so a value
of the wrong type (a string, a bool, 4.5 heads, null), out of range (0 heads, a negative norm
epsilon, a NaN rope base) or absurd (a context of 10^13 tokens) is refused with one
`ModelLoadError` line naming the file and the field, before any tensor is sized from it. Sizes
that tensors carry (hidden size, heads, vocabulary, layers) are then checked against the tensors
present (network/weight_contract.check_weights); position tables are sized by what the engine
uses, not by the context the file claims (network/llama.py). This module reads no file itself.
"""
from __future__ import annotations

import math
import numbers

from llm_playground.model.network.weight_contract import ModelLoadError

# Upper bounds for sizes read from metadata. They are far above any real model (the largest
# vocabularies are ~260k, hidden sizes ~16k, head counts ~128) and only exist so that a crafted
# value fails with a message before arithmetic on it; the tensors present decide the rest.
MAX_SIZE = 1 << 24
# Contexts: the longest real ones are ~10M tokens. Larger claims up to this are accepted (the
# position tables are sized by what the engine uses); beyond it a value is called absurd.
MAX_POSITIONS = 1 << 40


def integer(value, field: str, source: str, low: int = 1, high: int = MAX_SIZE) -> int:
    """`value` as an int in [low, high]: Python or numpy integers only (no bool, no 4.5)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ModelLoadError(f"{source}: {field} must be an integer, got {value!r:.40} "
                             f"({type(value).__name__})")
    value = int(value)
    if not low <= value <= high:
        kind = "absurd" if value > high else "out of range"
        raise ModelLoadError(f"{source}: {field} = {value} is {kind} (must be {low}..{high})")
    return value


def number(value, field: str, source: str, positive: bool = True, low: float | None = None,
           high: float | None = None) -> float:
    """`value` as a finite float (> 0 when `positive`, else >= 0; within [low, high] if given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ModelLoadError(f"{source}: {field} must be a number, got {value!r:.40} "
                             f"({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ModelLoadError(f"{source}: {field} = {value} is not a finite number")
    if (positive and value <= 0) or value < 0:
        raise ModelLoadError(f"{source}: {field} = {value} must be {'positive' if positive else '>= 0'}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ModelLoadError(f"{source}: {field} = {value} is out of range ({low}..{high})")
    return value


def boolean(value, field: str, source: str) -> bool:
    """`value` when it is a bool (JSON true/false), else ModelLoadError."""
    if not isinstance(value, bool):
        raise ModelLoadError(f"{source}: {field} must be true or false, got {value!r:.40}")
    return value


def token_id(value, field: str, source: str, vocab_size: int) -> int | None:
    """An optional special-token id inside the vocabulary (None stays None)."""
    if value is None:
        return None
    value = integer(value, field, source, low=0, high=1 << 62)
    if value >= vocab_size:
        raise ModelLoadError(f"{source}: {field} = {value} is outside the vocabulary (0..{vocab_size - 1})")
    return value


def llama3_scaling(scaling, field: str, source: str) -> dict:
    """Llama-3 rope scaling with finite positive factors and low < high (the smoothing divides
    by high - low), and an integer original context."""
    if not isinstance(scaling, dict):
        raise ModelLoadError(f"{source}: {field} must be an object, got {type(scaling).__name__}")
    out = {"factor": number(scaling["factor"], f"{field}.factor", source),
           "low_freq_factor": number(scaling["low_freq_factor"], f"{field}.low_freq_factor", source),
           "high_freq_factor": number(scaling["high_freq_factor"], f"{field}.high_freq_factor", source),
           "original_max_position_embeddings": integer(
               scaling["original_max_position_embeddings"],
               f"{field}.original_max_position_embeddings", source, high=MAX_POSITIONS)}
    if out["high_freq_factor"] <= out["low_freq_factor"]:
        raise ModelLoadError(f"{source}: {field}.high_freq_factor ({out['high_freq_factor']}) must "
                             f"be above low_freq_factor ({out['low_freq_factor']})")
    return out
