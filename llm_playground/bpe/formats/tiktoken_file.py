"""tiktoken's `.tiktoken` rank file: one `base64(token) rank` line per token, nothing else.

The file holds only the mergeable ranks (token bytes -> id, merges implied by the rank rule). It
has no place for the pre-tokenization pattern or the special tokens, so:

- loading a file whose SHA-256 is cl100k_base's or o200k_base's gives that encoding's pattern and
  special tokens; any other file gets the pattern passed in (default: cl100k) and the special
  tokens passed in (default: none);
- saving drops the pattern, the special tokens and an explicit merge list. Saving a tokenizer with
  a merge list is refused when its merge order differs from its id order (the rank rule would then
  encode differently). Where a token could also be built from a split that is not its recorded
  merge, the rank rule may still encode some rare strings differently; that case is not checked.

This module reads and writes the file; it does not encode text.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os

from llm_playground.bpe.formats.common import FormatError, make_tokenizer, tokenizer_parts, write_atomic

def parse_ranks(data: bytes, source: str = "<data>") -> dict[bytes, int]:
    """Rank-file bytes -> {token bytes: rank}; FormatError on any malformed line."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FormatError(f"{source}:{lineno}: expected 'base64 rank', got {line[:40]!r}")
        try:
            token = base64.b64decode(parts[0], validate=True)
            rank = int(parts[1])
        except (binascii.Error, ValueError):
            raise FormatError(f"{source}:{lineno}: expected 'base64 rank', got {line[:40]!r}") \
                from None
        if token in ranks:
            raise FormatError(f"{source}:{lineno}: token listed twice")
        ranks[token] = rank
    if not ranks:
        raise FormatError(f"{source}: empty rank file")
    if len(set(ranks.values())) != len(ranks):
        raise FormatError(f"{source}: two tokens share a rank")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise FormatError(f"{source}: {len(missing)} single bytes have no rank "
                          "(a byte-level rank file needs all 256)")
    return ranks


def dumps_ranks(tok) -> bytes:
    """The rank file's bytes for `tok` (see the module docstring for what is lost)."""
    vocab, merges = tokenizer_parts(tok)
    if merges is not None:
        inverse = {b: i for i, b in vocab.items()}
        made = [inverse[a + b] for a, b in merges]
        if any(x >= y for x, y in zip(made, made[1:])):
            raise FormatError("this tokenizer's merge order differs from its id order; "
                              "a .tiktoken rank file cannot represent it (save it as our own "
                              "file or as tokenizer.json)")
    return b"".join(base64.b64encode(token) + b" " + str(i).encode() + b"\n"
                    for i, token in sorted(vocab.items()))


def save_tiktoken(tok, path: str | os.PathLike) -> None:
    """Save `tok`'s ranks as a .tiktoken file at `path` (atomically)."""
    write_atomic(path, dumps_ranks(tok))


def load_tiktoken(path: str | os.PathLike, pattern: str | None = None,
                  special_tokens: dict[str, int] | None = None, name: str | None = None):
    """Read a rank file and return a `bpe.Tokenizer` with the tiktoken (rank) merge rule."""
    with open(path, "rb") as f:
        data = f.read()
    ranks = parse_ranks(data, str(path))
    from llm_playground.bpe import patterns
    from llm_playground.bpe.reference import SPECS  # the rank files tiktoken itself knows, by SHA-256
    digest = hashlib.sha256(data).hexdigest()
    known = next((spec for spec in SPECS.values() if spec.sha256 == digest), None)
    if known is not None:
        pattern = patterns.resolve(pattern) if pattern else known.pattern
        special_tokens = dict(known.special_tokens) if special_tokens is None else special_tokens
        name = name or known.name
    else:
        pattern = patterns.resolve(pattern) if pattern else patterns.CL100K
    vocab = {rank: token for token, rank in ranks.items()}
    return make_tokenizer(pattern, vocab, None, dict(special_tokens or {}),
                          name or os.path.basename(str(path)))
