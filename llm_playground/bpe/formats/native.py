r"""Our own tokenizer file: human-readable, versioned JSON (`*.bpe.json` by convention).

Layout (valid JSON, one vocabulary entry and one merge per line so it diffs and greps well):

    {
      "format": "llm-playground-bpe",
      "version": 1,
      "name": "my-32k",
      "pattern": "<the pre-tokenization regex>",
      "merge_rule": "merges",          # "merges": lowest merge index wins (Hugging Face rule)
                                       # "ranks":  lowest id of the concatenation wins (tiktoken)
      "special_tokens": {"<|endoftext|>": 32000},
      "vocab": [                       # index = token id; null where the id is special or unused
        "\\x00",
        "the",
        ...
      ],
      "merges": [["t", "h"], ...]      # present (may be empty) iff merge_rule == "merges"
    }

Token spelling ("escaped text"): the token's bytes read as UTF-8; every printable character is
written as itself, a backslash as `\\` and every other byte (control characters, newline, bytes
of incomplete or invalid UTF-8) as `\xHH`. So b" the" is " the", b"\n" is "\x0a", and the first
two bytes of "中" (e4 b8) are "\xe4\xb8". This module reads and writes that file; it does not
encode text.
"""
from __future__ import annotations

import json
import os

from llm_playground.bpe.formats.common import read_json, FormatError, make_tokenizer, tokenizer_parts, write_atomic

FORMAT_NAME = "llm-playground-bpe"
FORMAT_VERSION = 1


def escape_token(token: bytes) -> str:
    """bytes -> escaped text (see the module docstring)."""
    out: list[str] = []
    i = 0
    n = len(token)
    while i < n:
        b = token[i]
        width = 1 if b < 0x80 else 2 if 0xC2 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else \
            4 if 0xF0 <= b < 0xF5 else 0
        char = None
        if width and i + width <= n:
            try:
                char = token[i:i + width].decode("utf-8")
            except UnicodeDecodeError:
                char = None
        if char is not None and (char.isprintable() or char == " "):
            out.append("\\\\" if char == "\\" else char)
            i += width
        else:
            out.append(f"\\x{b:02x}")
            i += 1
    return "".join(out)


def unescape_token(text: str) -> bytes:
    """escaped text -> bytes; raises FormatError on a malformed escape."""
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogatepass")
            i += 1
        elif text.startswith("\\\\", i):
            out.append(0x5C)
            i += 2
        elif text.startswith("\\x", i) and i + 4 <= n:
            try:
                out.append(int(text[i + 2:i + 4], 16))
            except ValueError:
                raise FormatError(f"bad escape {text[i:i + 4]!r} in token {text!r}") from None
            i += 4
        else:
            raise FormatError(f"bad escape at position {i} in token {text!r}")
    return bytes(out)


def dumps(tok) -> str:
    """The file's text for tokenizer `tok`."""
    vocab, merges = tokenizer_parts(tok)
    size = max(list(vocab) + list(tok.special_tokens.values()) + [-1]) + 1
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": tok.name,
        "pattern": tok.pattern,
        "merge_rule": "merges" if merges is not None else "ranks",
        "special_tokens": dict(sorted(tok.special_tokens.items(), key=lambda kv: kv[1])),
    }
    lines = ["{"]
    for key, value in header.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    entries = [json.dumps(escape_token(vocab[i]), ensure_ascii=False) if i in vocab else "null"
               for i in range(size)]
    lines.append('  "vocab": [')
    lines.append(",\n".join("    " + e for e in entries))
    if merges is None:
        lines.append("  ]")
    else:
        lines.append("  ],")
        lines.append('  "merges": [')
        lines.append(",\n".join(
            "    [" + json.dumps(escape_token(a), ensure_ascii=False) + ", "
            + json.dumps(escape_token(b), ensure_ascii=False) + "]" for a, b in merges))
        lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_native(tok, path: str | os.PathLike) -> None:
    """Save `tok` in the native JSON format at `path` (atomically)."""
    write_atomic(path, dumps(tok).encode("utf-8"))


def parse(doc: dict, source: str = "<data>"):
    """(pattern, vocab, merges, special_tokens, name) from a parsed native document."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise FormatError(f"{source}: not an {FORMAT_NAME} file")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise FormatError(f"{source}: format version {version!r} is not supported "
                          f"(this program reads version {FORMAT_VERSION})")
    try:
        pattern = str(doc["pattern"])
        specials = {str(k): int(v) for k, v in doc.get("special_tokens", {}).items()}
        vocab = {i: unescape_token(t) for i, t in enumerate(doc["vocab"]) if t is not None}
        rule = doc.get("merge_rule", "merges")
        if rule not in ("merges", "ranks"):
            raise FormatError(f"{source}: unknown merge_rule {rule!r}")
        merges = None
        if rule == "merges":
            merges = [(unescape_token(a), unescape_token(b)) for a, b in doc.get("merges", [])]
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError(f"{source}: malformed {FORMAT_NAME} file ({e!r})") from None
    if len(set(vocab.values())) != len(vocab):
        raise FormatError(f"{source}: the vocabulary lists a token twice")
    clash = set(specials.values()) & set(vocab)
    if clash:
        raise FormatError(f"{source}: special-token ids {sorted(clash)[:5]} are also normal tokens")
    if merges is not None:
        known = set(vocab.values())
        for a, b in merges:
            if a + b not in known:
                raise FormatError(f"{source}: merge {escape_token(a)!r} + {escape_token(b)!r} "
                                  "makes a token that is not in the vocabulary")
    return pattern, vocab, merges, specials, str(doc.get("name", ""))


def load_native(path: str | os.PathLike):
    """Read one of our files and return a `bpe.Tokenizer`."""
    doc = read_json(path)
    pattern, vocab, merges, specials, name = parse(doc, str(path))
    return make_tokenizer(pattern, vocab, merges, specials, name or os.path.basename(str(path)))
