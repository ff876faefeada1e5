"""Hugging Face `tokenizer.json` for byte-level BPE: export ours, import the common ones.

Export: model BPE over the GPT-2 byte-level alphabet (b" the" is spelled "Ġthe"), pre-tokenizer
`Split(our regex, isolated)` (possessive intervals rewritten as atomic groups for Oniguruma) then `ByteLevel(use_regex=False)`, decoder `ByteLevel`, no
normalizer, and our special tokens as `added_tokens` (special, not normalized). A tokenizer with
the tiktoken rank rule (no merge list) gets the merge list Hugging Face's own tiktoken converter
derives: every split of a token into two known tokens, ordered by the token's rank. The file loads
in `tokenizers.Tokenizer.from_file` and gives our ids.

Import: byte-level BPE files whose pre-tokenizer is one of
  - `ByteLevel(use_regex=True)` (GPT-2 and most models that copy it),
  - `Sequence[Split(Regex), ByteLevel(use_regex=False)]` (ours, Llama 3, Qwen2, o200k-style),
  - `Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]` (SmolLM, StarCoder);
any other normalizer/pre-tokenizer raises FormatError rather than tokenizing differently. Added
tokens marked special become our special tokens; non-special added tokens outside the byte-level
alphabet are not supported (FormatError). `ignore_merges: true` files are read with the rank rule.
"""
from __future__ import annotations

import json
import os
import re

from llm_playground.bpe import patterns
from llm_playground.bpe.formats.common import (FormatError, read_json, byte_level_to_bytes, bytes_to_byte_level,
                                make_tokenizer, tokenizer_parts, write_atomic)


_POSSESSIVE_INTERVAL = re.compile(r"\{\d*,?\d*\}\+")


def _atom_start(pattern: str, end: int) -> int:
    """Start index of the regex atom that ends just before `end`."""
    last = pattern[end - 1]
    if last == "}" and "\\p{" in pattern[:end] or last == "}" and "\\P{" in pattern[:end]:
        return max(pattern.rfind("\\p{", 0, end), pattern.rfind("\\P{", 0, end))
    if last in "])":
        opener, depth, i = "[" if last == "]" else "(", 0, end - 1
        while i >= 0:
            escaped = i > 0 and pattern[i - 1] == "\\"
            if not escaped and pattern[i] == last:
                depth += 1
            elif not escaped and pattern[i] == opener:
                depth -= 1
                if depth == 0:
                    return i
            i -= 1
        raise FormatError(f"cannot translate pattern for Hugging Face: {pattern!r}")
    if end >= 2 and pattern[end - 2] == "\\":
        return end - 2
    return end - 1


def onig_pattern(pattern: str) -> str:
    """Our `regex` pattern rewritten for Oniguruma (what `tokenizers` uses).

    Oniguruma reads `X{1,3}+` as `(?:X{1,3})+` (a repeat of a repeat), not as a possessive
    interval; `(?>X{1,3})` means in both what `regex` means by `X{1,3}+`. `?+`, `*+` and `++` are
    possessive in both and stay.
    """
    out = pattern
    while True:
        match = _POSSESSIVE_INTERVAL.search(out)
        if match is None:
            return out
        start = _atom_start(out, match.start())
        interval = match.group()[:-1]
        out = out[:start] + "(?>" + out[start:match.start()] + interval + ")" + out[match.end():]


def derived_merges(vocab: dict[int, bytes]) -> list[tuple[bytes, bytes]]:
    """Merges implied by ranks (the tiktoken rule), as Hugging Face's converter derives them."""
    ranks = {token: i for i, token in vocab.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return [(left, right) for _, _, _, left, right in merges]


def to_document(tok) -> dict:
    """The tokenizer.json document (a dict) for `tok`."""
    vocab, merges = tokenizer_parts(tok)
    if merges is None:
        merges = derived_merges(vocab)
    spelled = {bytes_to_byte_level(token): i for i, token in sorted(vocab.items())}
    added = [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for text, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": onig_pattern(tok.pattern)}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": spelled,
                  "merges": [[bytes_to_byte_level(a), bytes_to_byte_level(b)] for a, b in merges]},
    }


def save_hf_json(tok, path: str | os.PathLike) -> None:
    """Save `tok` as a Hugging Face tokenizer.json at `path` (atomically)."""
    text = json.dumps(to_document(tok), ensure_ascii=False, indent=1)
    write_atomic(path, text.encode("utf-8"))


def _regex_from_onig(pattern: str, source: str) -> str:
    """A Split regex from a tokenizer.json as a `regex` pattern (our known patterns by name)."""
    for known in set(patterns.NAMED.values()):
        if pattern in (known, onig_pattern(known)):
            return known
    if _POSSESSIVE_INTERVAL.search(pattern):
        raise FormatError(f"{source}: pattern uses X{{n,m}}+, which Oniguruma and `regex` read "
                          "differently; not supported")
    return keep_gaps(pattern, source)


def keep_gaps(pattern: str, source: str) -> str:
    """A findall pattern that also yields the text between matches, as HF's Split(Isolated)
    does: `findall` alone would drop it (`\\d+` on "ab12" gives only "12"). A pattern that
    matches at every position splits exactly as before (its own alternative always wins)."""
    wrapped = f"(?:{pattern})|(?:(?!(?:{pattern}))[\\s\\S])+"
    try:
        patterns.compiled(wrapped)
    except Exception as e:  # regex.error, and global flags in the middle of the pattern
        raise FormatError(f"{source}: Split pattern {pattern[:60]!r} is not supported ({e})") \
            from None
    return wrapped


def _pattern_from(pre: dict | None, source: str) -> str:
    """Our single regex equal to the file's pre-tokenizer, or FormatError."""
    if pre is None:
        raise FormatError(f"{source}: no pre-tokenizer; only byte-level BPE files are supported")
    kind = pre.get("type")
    if kind == "ByteLevel" and pre.get("use_regex", True):
        if pre.get("add_prefix_space"):
            raise FormatError(f"{source}: ByteLevel add_prefix_space=true is not supported")
        return patterns.GPT2
    if kind == "Sequence":
        steps = pre.get("pretokenizers", [])
        kinds = [s.get("type") for s in steps]
        if (kinds == ["Split", "ByteLevel"] and "Regex" in steps[0].get("pattern", {})
                and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
                and not steps[1].get("use_regex", True)
                and not steps[1].get("add_prefix_space")):
            return _regex_from_onig(steps[0]["pattern"]["Regex"], source)
        if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
                and steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")):
            return patterns.SMOLLM
        if kinds == ["ByteLevel"]:
            return _pattern_from(steps[0], source)
    raise FormatError(f"{source}: pre-tokenizer {json.dumps(pre)[:120]} is not supported "
                      "(expected a byte-level BPE file)")


def from_document(doc: dict, source: str = "<data>"):
    """(pattern, vocab, merges, special_tokens, name) from a parsed tokenizer.json."""
    model = doc.get("model") or {}
    if model.get("type", "BPE") != "BPE" or "vocab" not in model:
        raise FormatError(f"{source}: model type {model.get('type')!r}; only BPE is supported")
    normalizer = doc.get("normalizer")
    if normalizer and not (normalizer.get("type") == "Sequence"
                           and not normalizer.get("normalizers")):
        raise FormatError(f"{source}: normalizer {normalizer.get('type')!r} is not supported")
    pattern = _pattern_from(doc.get("pre_tokenizer"), source)
    specials: dict[str, int] = {}
    plain_added: dict[str, int] = {}
    for entry in doc.get("added_tokens", []):
        (specials if entry.get("special") else plain_added)[entry["content"]] = int(entry["id"])
    vocab: dict[int, bytes] = {}
    for text, i in model["vocab"].items():
        if text in specials and specials[text] == i:
            continue
        token = byte_level_to_bytes(text)
        if token is None:
            raise FormatError(f"{source}: token {text!r} (id {i}) is not in the byte-level alphabet")
        vocab[int(i)] = token
    for text, i in plain_added.items():
        if i not in vocab or vocab[i] != byte_level_to_bytes(text):
            raise FormatError(f"{source}: non-special added token {text!r} is not supported")
    merges = None
    if not model.get("ignore_merges"):
        merges = []
        for m in model.get("merges", []):
            a, b = m.split(" ") if isinstance(m, str) else m
            left, right = byte_level_to_bytes(a), byte_level_to_bytes(b)
            if left is None or right is None:
                raise FormatError(f"{source}: merge {m!r} is not in the byte-level alphabet")
            merges.append((left, right))
    return pattern, vocab, merges, specials, ""


def load_hf_json(path: str | os.PathLike):
    """Read a byte-level BPE tokenizer.json and return a `bpe.Tokenizer`."""
    doc = read_json(path)
    pattern, vocab, merges, specials, _ = from_document(doc, str(path))
    return make_tokenizer(pattern, vocab, merges, specials, os.path.basename(str(path)))
