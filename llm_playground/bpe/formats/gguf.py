"""Read (only) the tokenizer stored in a GGUF model file's metadata.

Uses the `gguf` package's `GGUFReader` (memory-mapped; tensors are not read). A caller that has
parsed the file already (the model loader) passes its reader, so the header is parsed once. Supported:
`tokenizer.ggml.model == "gpt2"` (byte-level BPE with a merge list). Read keys:
`tokenizer.ggml.tokens` (spelled in the GPT-2 byte-level alphabet), `.merges`, `.token_type`,
`.pre`, `.bos_token_id`, `.eos_token_id`, `.padding_token_id`, `.unknown_token_id`,
`.add_bos_token`, and `tokenizer.chat_template`.

CONTROL tokens (type 3) become our special tokens: never produced from user text unless allowed
(tiktoken's rule; Hugging Face instead matches them inside plain text). USER_DEFINED tokens
(type 4) are not supported and raise.

The `pre` name picks the pre-tokenization regex the way llama.cpp does. For SmolLM2 (`smollm`)
that is `\\p{N}` first, then the GPT-2 regex: the same as the model's original Hugging Face
tokenizer (`Digits(individual_digits=True)` + `ByteLevel`). transformers' GGUF loader uses the
plain GPT-2 regex for `smollm`; the two differ only where a whitespace run is followed by a digit
("x  1": ours/llama.cpp/original "x", "  ", "1"; transformers "x", " ", " 1").
"""
from __future__ import annotations

import os
import struct

from llm_playground.bpe import patterns
from llm_playground.bpe.formats.common import FormatError, byte_level_to_bytes, make_tokenizer

TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL = 1, 2, 3
TOKEN_TYPE_USER_DEFINED, TOKEN_TYPE_UNUSED, TOKEN_TYPE_BYTE = 4, 5, 6

QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_patterns() -> dict[str, str]:
    digits_then_gpt2, llama3 = patterns.SMOLLM, patterns.CL100K_2023  # llama3 = 2023 cl100k form
    return {
        "default": patterns.GPT2, "gpt2": patterns.GPT2, "gpt-2": patterns.GPT2,
        "smollm": digits_then_gpt2, "starcoder": digits_then_gpt2, "refact": digits_then_gpt2,
        "codeshell": digits_then_gpt2,
        "llama3": llama3, "llama-v3": llama3, "llama-bpe": llama3, "smaug-bpe": llama3,
        "dbrx": llama3,
        "qwen2": QWEN2, "deepseek-r1-qwen": QWEN2,
        "gpt-4o": patterns.O200K,
    }


def pattern_for_pre(pre: str | None) -> str:
    """The regex for a GGUF `tokenizer.ggml.pre` name; FormatError for an unknown name."""
    table = _pre_patterns()
    key = pre or "default"
    if key not in table:
        raise FormatError(f"GGUF pre-tokenizer {key!r} is not known here "
                          f"(known: {', '.join(sorted(table))})")
    return table[key]


def _field(reader, key: str, default=None, path=""):
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except (ValueError, IndexError, UnicodeDecodeError, TypeError) as e:
        raise FormatError(f"{path}: GGUF metadata {key} is unreadable ({type(e).__name__})") from None


def read_gguf_tokenizer(path: str | os.PathLike, pattern: str | None = None, reader=None):
    """(Tokenizer, meta) from the GGUF file at `path`, or from `reader` (a GGUFReader over that
    file, parsed already) when given; `path` then only names the file in messages.

    meta: name, model, pre, bos_id, eos_id, padding_id, unknown_id, add_bos_token,
    token_types (list[int]), chat_template (str | None).
    """
    if reader is None:
        try:
            from llm_playground.bpe.formats.gguf_reader import TruncatedGGUF, checked_reader_class
        except ImportError:  # pragma: no cover - gguf is a runtime dependency
            raise FormatError("reading .gguf files needs the `gguf` package") from None
        try:
            reader = checked_reader_class()(str(path), "r")
        except TruncatedGGUF as e:
            raise FormatError(f"{path}: {e}") from None
        except OSError as e:
            raise FormatError(f"{path}: not a readable GGUF file ({e.strerror or e})") from None
        except (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error) as e:
            # The stock reader slices its memory map without bounds checks: a file cut short
            # fails in numpy or with an IndexError, neither of which says what is wrong.
            size = os.path.getsize(path)
            raise FormatError(f"{path}: truncated or corrupt GGUF file ({size} bytes): its header "
                              f"or metadata ends early or is malformed ({type(e).__name__})") from None
    get = lambda key, default=None: _field(reader, key, default, path)  # noqa: E731
    model = get("tokenizer.ggml.model")
    if model != "gpt2":
        raise FormatError(f"{path}: tokenizer model {model!r}; only byte-level BPE ('gpt2') "
                          "is supported")
    tokens = get("tokenizer.ggml.tokens")
    merges_text = get("tokenizer.ggml.merges")
    if not tokens or merges_text is None:
        raise FormatError(f"{path}: no tokenizer.ggml.tokens / merges in the metadata")
    token_types = list(get("tokenizer.ggml.token_type", [TOKEN_TYPE_NORMAL] * len(tokens)))
    if len(token_types) != len(tokens):
        raise FormatError(f"{path}: tokenizer.ggml.token_type has {len(token_types)} entries for "
                          f"{len(tokens)} tokens")
    pre = get("tokenizer.ggml.pre")
    vocab: dict[int, bytes] = {}
    specials: dict[str, int] = {}
    for i, (text, kind) in enumerate(zip(tokens, token_types)):
        if kind == TOKEN_TYPE_CONTROL:
            specials[text] = i
        elif kind == TOKEN_TYPE_USER_DEFINED:
            raise FormatError(f"{path}: user-defined token {text!r} (id {i}) is not supported")
        else:
            token = byte_level_to_bytes(text)
            if token is None:
                raise FormatError(f"{path}: token {text!r} (id {i}) is not in the byte-level "
                                  "alphabet")
            vocab[i] = token
    merges = []
    for line in merges_text:
        left_text, sep, right_text = line.partition(" ")
        left, right = byte_level_to_bytes(left_text), byte_level_to_bytes(right_text)
        if not sep or left is None or right is None:
            raise FormatError(f"{path}: malformed merge {line!r}")
        merges.append((left, right))
    meta = {
        "name": get("general.name") or os.path.basename(str(path)),
        "model": model,
        "pre": pre,
        "bos_id": get("tokenizer.ggml.bos_token_id"),
        "eos_id": get("tokenizer.ggml.eos_token_id"),
        "padding_id": get("tokenizer.ggml.padding_token_id"),
        "unknown_id": get("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": get("tokenizer.ggml.add_bos_token"),
        "token_types": token_types,
        "chat_template": get("tokenizer.chat_template"),
    }
    for key in ("bos_id", "eos_id", "padding_id", "unknown_id"):
        if meta[key] is not None:
            meta[key] = int(meta[key])
    tok = make_tokenizer(pattern or pattern_for_pre(pre), vocab, merges, specials, meta["name"])
    return tok, meta
