"""Pieces every tokenizer file format shares: errors, atomic writes, the byte-level alphabet.

- `FormatError`: a file that is not what it claims to be (one clear line for the user).
- `write_atomic`: write to a temporary file beside the target and rename, so a failed save never
  leaves a partial file behind.
- `BYTE_TO_UNICODE` / `UNICODE_TO_BYTE`: GPT-2's reversible map from the 256 byte values to
  printable characters, which Hugging Face `tokenizer.json` and GGUF files use to spell tokens.
- `tokenizer_parts`: read vocab / merges out of a `bpe.Tokenizer` through its public surface.

It does not parse or encode anything itself.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class FormatError(ValueError):
    """A tokenizer file could not be read or written (bad content, unsupported variant)."""


def read_json(path: str | os.PathLike):
    """The JSON document in the file at `path`; FormatError (one line) when it is not UTF-8 JSON
    or is nested too deeply for the parser (a crafted "[[[[..." raises RecursionError)."""
    import json
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply to be a tokenizer file") from None


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FormatError(f"cannot write {target}: folder {folder} does not exist")
    if target.is_dir():
        raise FormatError(f"cannot write {target}: it is a folder; give a file name")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_UNICODE: dict[int, str] = _bytes_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_UNICODE.items()}


def bytes_to_byte_level(token: bytes) -> str:
    """b' the' -> 'Ġthe' (the spelling tokenizer.json and GGUF use)."""
    return "".join(BYTE_TO_UNICODE[b] for b in token)


def byte_level_to_bytes(text: str) -> bytes | None:
    """'Ġthe' -> b' the'; None if `text` uses a character outside the byte-level alphabet."""
    try:
        return bytes(UNICODE_TO_BYTE[c] for c in text)
    except KeyError:
        return None


def tokenizer_parts(tok) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]] | None]:
    """(vocab without specials, merges or None) of a `bpe.Tokenizer`.

    Uses `tok.vocab` / `tok.merges` when the class exposes them, else walks `id_to_bytes`.
    """
    vocab = getattr(tok, "vocab", None)
    merges = getattr(tok, "merges", None)
    specials = set(tok.special_tokens.values())
    if vocab is None:
        vocab = {}
        for i in range(tok.vocab_size):
            if i in specials:
                continue
            try:
                vocab[i] = tok.id_to_bytes(i)
            except (KeyError, IndexError, ValueError):
                continue
    else:
        vocab = {int(i): bytes(b) for i, b in vocab.items() if int(i) not in specials}
    if merges is not None:
        merges = [(bytes(a), bytes(b)) for a, b in merges]
    return vocab, merges


def make_tokenizer(pattern: str, vocab: dict[int, bytes], merges, special_tokens: dict[str, int],
                   name: str):
    """Build a `bpe.Tokenizer` (imported late so formats load even while the core is absent)."""
    from llm_playground import bpe  # late import: bpe/__init__ imports this package
    return bpe.Tokenizer(pattern, vocab, merges, special_tokens, name)
