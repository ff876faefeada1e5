"""Pre-tokenization patterns: the regexes that cut text into pieces before BPE merges them.

GPT2, CL100K and O200K are copied verbatim from tiktoken's current source
(`tiktoken_ext/openai_public.py`, tiktoken 0.14), including its possessive quantifiers.
CL100K_2023 is the form cl100k_base shipped with in 2023; it splits trailing whitespace
differently (`"today\\n "` -> `"today", "\\n "` now, `"today", "\\n", " "` then).
SMOLLM is the split of the default model (SmolLM2, Hugging Face pre-tokenizer
`Sequence([Digits(individual_digits=True), ByteLevel(use_regex=True)])`, llama.cpp pre "smollm")
written as one regex.

All patterns are compiled with the third-party `regex` module, never `re`: the two disagree on
`\\x1c`-`\\x1f` (whitespace for `re`, not for `regex` or tiktoken). This module does not split
special tokens out of text; `bpe.tokenizer` does that.
"""
from __future__ import annotations

import difflib
import functools

import regex

GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

CL100K = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

CL100K_2023 = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

O200K = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Digits one by one, then GPT-2's byte-level regex inside each non-digit run. As one regex the
# whitespace before a digit must end its piece, hence `\s+(?=\p{N})` before `\s+(?!\S)`.
SMOLLM = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""
)

REGEX_PREFIX = "regex:"          # "regex:R" is always the regex R, even when R looks like a name
NAMES = ("gpt2", "cl100k", "cl100k_2023", "o200k", "smollm")   # canonical names, one per pattern
NAMED: dict[str, str] = {
    "gpt2": GPT2,
    "r50k": GPT2,
    "cl100k": CL100K,
    "cl100k_base": CL100K,
    "cl100k_2023": CL100K_2023,
    "o200k": O200K,
    "o200k_base": O200K,
    "smollm": SMOLLM,
}


def known_names() -> str:
    """The names `resolve` knows, for messages: 'gpt2, cl100k, ... (or r50k, ...)'."""
    aliases = [n for n in NAMED if n not in NAMES]
    return f"{', '.join(NAMES)} (or {', '.join(aliases)})"


def resolve(name_or_regex: str) -> str:
    """Return the regex for a known name (case-insensitive), or check and return a user regex
    (`regex:R` or R). Raises ValueError with a one-line message when the regex does not compile.
    """
    if not isinstance(name_or_regex, str) or not name_or_regex:
        raise ValueError("pattern must be a non-empty string (a name like 'cl100k' or a regex)")
    prefixed = name_or_regex.startswith(REGEX_PREFIX)
    if prefixed:
        user = name_or_regex[len(REGEX_PREFIX):]
        if not user:
            raise ValueError(f"pattern {name_or_regex!r}: a regex must follow {REGEX_PREFIX!r}; "
                             f"known names: {known_names()}")
    else:
        known = NAMED.get(name_or_regex.lower())
        if known is not None:
            return known
        user = name_or_regex
    try:
        compiled(user)
    except regex.error as exc:
        what = "is not a valid regex" if prefixed else "is neither a known name nor a valid regex"
        raise ValueError(f"pattern {name_or_regex!r} {what} ({exc}); known names: "
                         f"{known_names()}") from None
    return user


_BARE_WORD = regex.compile(r"\w[\w.-]*")


def check_option(value: str) -> str:
    """Check a pattern as a user types it (`bpe train --pattern`): a known name, `regex:R`, or a
    regex R that is not a bare word. A bare word (letters, digits, _ . -) that is no known name,
    like 'nope' or 'cl100k-base', is refused as an unknown name: as a regex it would match only
    that word, and the corpus would seem empty. Returns the value unchanged (for `resolve`);
    raises ValueError with a one-line message that lists the valid choices.
    """
    if (isinstance(value, str) and _BARE_WORD.fullmatch(value)
            and value.lower() not in NAMED):
        close = difflib.get_close_matches(value.lower(), list(NAMED), n=1, cutoff=0.7)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown pattern {value!r}{hint}: known names are {known_names()}; "
                         f"a custom regex that is a plain word must be written {REGEX_PREFIX}{value}")
    resolve(value)
    return value


def name_of(pattern: str) -> str | None:
    """The canonical short name of a known pattern string, else None."""
    for name in NAMES:
        if NAMED[name] == pattern:
            return name
    return None


@functools.lru_cache(maxsize=64)
def compiled(pattern: str) -> regex.Pattern:
    """The compiled `regex` pattern (cached: compiling o200k takes milliseconds)."""
    return regex.compile(pattern)
