"""`Tokenizer`: byte-level BPE encoding and decoding with special tokens, exactly as tiktoken.

Encoding = split the text with the pattern regex, look every piece up in a cache of pre-tokens,
and on a miss merge the piece's bytes (`bpe.merge`). Two merge rules:

- `merges=None`: tiktoken's rule. The vocab is a rank table (id = rank); the adjacent pair whose
  concatenation has the lowest id merges first, and a piece that is itself a token is that token.
- `merges=[(a, b), ...]`: Hugging Face's rule. The pair with the lowest merge index merges first;
  the result is the id of the bytes a + b. Byte tokens need not be ids 0..255 (GGUF vocabs put
  special tokens first).

Special tokens follow tiktoken: `encode` raises ValueError when text spells a disallowed special
token (all of them by default), turns allowed ones into their id, and `encode_ordinary` treats
them as plain text. Lone surrogates are replaced by U+FFFD before encoding, as tiktoken does, so
`decode(encode(s)) == s` holds for every str without lone surrogates.

This module does not read or write files (`bpe.formats`) and does not train (`bpe.train`).
"""
from __future__ import annotations

import functools
from itertools import chain
from typing import AbstractSet, Collection, Iterable, Literal

import regex

from llm_playground.bpe import patterns
from llm_playground.bpe.merge import (HEAP_MIN_LEN, MergePairTable, RankPairTable, merge, merge_rank_bytes,
                       merge_with_trees)

CACHE_MAX_ENTRIES = 200_000  # pre-token cache is cleared past this many pieces
CACHE_MAX_PIECE_LEN = 256  # longer pieces are not cached (they are rare and big)
PAIR_TABLE_MAX_ENTRIES = 2_000_000  # lazily filled tiktoken pair table is cleared past this


class _PieceCache(dict):
    """piece (str) -> token ids; a miss encodes the piece (via `dict.__missing__`)."""

    __slots__ = ("encode_piece",)

    def __missing__(self, piece: str) -> list[int]:
        ids = self.encode_piece(piece)
        if len(piece) <= CACHE_MAX_PIECE_LEN:
            self[piece] = ids
        return ids


class _RankPieceCache(dict):
    """The tiktoken rule's piece cache: a miss is a whole token, or a short piece merged on its
    bytes (`merge_rank_bytes`, no pair table), or else the general `encode_piece` (long pieces).
    Only for rank vocabs that hold all 256 single bytes."""

    __slots__ = ("encode_piece", "ranks")

    def __missing__(self, piece: str) -> list[int]:
        data = piece.encode("utf-8")
        whole = self.ranks.get(data)
        if whole is not None:
            ids = [whole]
        elif len(data) < HEAP_MIN_LEN:
            ids = merge_rank_bytes(data, self.ranks)
        else:
            ids = self.encode_piece(piece)
        if len(piece) <= CACHE_MAX_PIECE_LEN:
            self[piece] = ids
        return ids


def _raise_disallowed_special_token(token: str):
    # Same text as tiktoken.core.raise_disallowed_special_token.
    raise ValueError(
        f"Encountered text corresponding to disallowed special token {token!r}.\n"
        "If you want this text to be encoded as a special token, "
        f"pass it to `allowed_special`, e.g. `allowed_special={{{token!r}, ...}}`.\n"
        f"If you want this text to be encoded as normal text, disable the check for this token "
        f"by passing `disallowed_special=(enc.special_tokens_set - {{{token!r}}})`.\n"
        "To disable this check for all special tokens, pass `disallowed_special=()`.\n"
    )


@functools.lru_cache(maxsize=64)
def _special_regex(tokens: frozenset[str]) -> regex.Pattern:
    # Longest first so that a special token that is a prefix of another never shadows it.
    ordered = sorted(tokens, key=lambda t: (-len(t), t))
    return regex.compile("|".join(regex.escape(t) for t in ordered))


def _fix_surrogates(text: str) -> str:
    # tiktoken's fix-up: lone surrogates become U+FFFD, valid pairs become their character.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Tokenizer:
    """A byte-level BPE tokenizer (see the module docstring for the two merge rules)."""

    def __init__(self, pattern: str, vocab: dict[int, bytes],
                 merges: list[tuple[bytes, bytes]] | None = None,
                 special_tokens: dict[str, int] | None = None, name: str = ""):
        self.pattern = patterns.resolve(pattern)
        self.name = name
        self.vocab = {int(i): bytes(b) for i, b in vocab.items()}
        self.merges = None if merges is None else [(bytes(a), bytes(b)) for a, b in merges]
        self.special_tokens = dict(special_tokens or {})
        self.special_tokens_set = frozenset(self.special_tokens)
        self._special_ids = frozenset(self.special_tokens.values())
        if not self.vocab:
            raise ValueError("vocab is empty")
        if any(i < 0 for i in self.vocab) or any(i < 0 for i in self.special_tokens.values()):
            raise ValueError("token ids must be non-negative")

        self._bytes_to_id: dict[bytes, int] = {}
        for i in sorted(self.vocab):
            self._bytes_to_id.setdefault(self.vocab[i], i)  # duplicates: the lowest id wins
        if self.merges is None and len(self._bytes_to_id) != len(self.vocab):
            raise ValueError("a rank vocab (merges=None) must not hold the same bytes twice")
        self._id_bytes = dict(self.vocab)
        for text, i in self.special_tokens.items():
            self._id_bytes[i] = text.encode("utf-8")
        self.vocab_size = max(self._id_bytes) + 1
        self._byte_ids = [self._bytes_to_id.get(bytes([b])) for b in range(256)]

        if self.merges is None:
            self._ranks: dict[bytes, int] | None = self._bytes_to_id
            self._pairs = RankPairTable(self.vocab, self._ranks)
        else:
            self._ranks = None
            self._pairs = self._build_merge_table(self.merges)
        self._split = patterns.compiled(self.pattern).findall
        if self._ranks is not None and None not in self._byte_ids:
            self._cache: dict[str, list[int]] = _RankPieceCache()
            self._cache.ranks = self._ranks
        else:
            self._cache = _PieceCache()
        self._cache.encode_piece = self._encode_piece
        self._special_re = _special_regex(self.special_tokens_set) if self.special_tokens else None
        self._producer: dict[int, tuple[int, int]] | None = None

    # ---------------------------------------------------------------- construction helpers
    def _build_merge_table(self, merges: list[tuple[bytes, bytes]]) -> MergePairTable:
        table = MergePairTable()
        get = self._bytes_to_id.get
        for index, (a, b) in enumerate(merges):
            ia, ib, iz = get(a), get(b), get(a + b)
            if ia is None or ib is None or iz is None:
                missing = a if ia is None else b if ib is None else a + b
                raise ValueError(f"merge #{index} ({a!r}, {b!r}) uses {missing!r}, "
                                 f"which is not in the vocab")
            table[ia, ib] = (index, iz)  # a repeated pair keeps its last index, as HF does
        return table

    # ---------------------------------------------------------------- encoding
    def _encode_piece(self, piece: str) -> list[int]:
        data = piece.encode("utf-8")  # UnicodeEncodeError on lone surrogates: encode() fixes up
        if self._ranks is not None:
            whole = self._ranks.get(data)
            if whole is not None:
                return [whole]
            if len(self._pairs) > PAIR_TABLE_MAX_ENTRIES:
                self._pairs.clear()
        byte_ids = self._byte_ids
        ids = [byte_ids[b] for b in data]
        if None in ids:
            bad = next(b for b in data if byte_ids[b] is None)
            raise ValueError(f"tokenizer {self.name!r} has no token for byte 0x{bad:02x}, "
                             f"so it cannot encode {piece!r}")
        return merge(ids, self._pairs)

    def _encode_ordinary_unchecked(self, text: str) -> list[int]:
        cache = self._cache
        if len(cache) > CACHE_MAX_ENTRIES:
            cache.clear()
        return list(chain.from_iterable(map(cache.__getitem__, self._split(text))))

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token text as ordinary text."""
        try:
            return self._encode_ordinary_unchecked(text)
        except UnicodeEncodeError:
            return self._encode_ordinary_unchecked(_fix_surrogates(text))

    def encode(self, text: str, allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
               disallowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Encode text as tiktoken does: allowed special tokens become their ids, disallowed
        ones raise ValueError, special tokens in neither set are encoded as ordinary text."""
        if allowed_special == "all":
            allowed_special = self.special_tokens_set
        if disallowed_special == "all":
            disallowed_special = self.special_tokens_set - frozenset(allowed_special)
        if disallowed_special:
            match = _special_regex(frozenset(disallowed_special)).search(text)
            if match:
                _raise_disallowed_special_token(match.group())
        allowed = frozenset(allowed_special) & self.special_tokens_set
        try:
            return self._encode_with_specials(text, allowed)
        except UnicodeEncodeError:
            return self._encode_with_specials(_fix_surrogates(text), allowed)

    def _encode_with_specials(self, text: str, allowed: frozenset[str]) -> list[int]:
        if not allowed:
            return self._encode_ordinary_unchecked(text)
        search = self._special_re.search
        out: list[int] = []
        start = 0
        while True:
            match = search(text, start)
            while match is not None and match.group() not in allowed:
                match = search(text, match.start() + 1)
            end = len(text) if match is None else match.start()
            out.extend(self._encode_ordinary_unchecked(text[start:end]))
            if match is None:
                return out
            out.append(self.special_tokens[match.group()])
            start = match.end()

    def encode_batch(self, texts: Iterable[str], **kwargs) -> list[list[int]]:
        """`encode` for each text (one process; a plain loop is what tiktoken does fastest)."""
        return [self.encode(t, **kwargs) for t in texts]

    # ---------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of `ids` joined; an unknown id raises ValueError."""
        try:
            return b"".join(map(self._id_bytes.__getitem__, ids))
        except KeyError as exc:
            raise ValueError(f"unknown token id {exc.args[0]!r} "
                             f"(vocab size {self.vocab_size})") from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of `ids` (invalid UTF-8 handled by `errors`)."""
        return self.decode_bytes(ids).decode("utf-8", errors)

    def id_to_bytes(self, i: int) -> bytes:
        """The bytes of token `i`; an unknown id raises ValueError."""
        try:
            return self._id_bytes[i]
        except KeyError:
            raise ValueError(f"unknown token id {i!r} (vocab size {self.vocab_size})") from None

    def token_to_id(self, b: bytes) -> int | None:
        """The id of the token with bytes `b` (normal or special), or None."""
        found = self._bytes_to_id.get(bytes(b))
        if found is None:
            try:
                found = self.special_tokens.get(bytes(b).decode("utf-8"))
            except UnicodeDecodeError:
                return None
        return found

    def is_special(self, i: int) -> bool:
        """True when `i` is a special token's id."""
        return i in self._special_ids

    def incremental_decoder(self):
        """A new IncrementalDecoder for one stream of this tokenizer's ids."""
        from llm_playground.bpe.incremental_decoder import IncrementalDecoder
        return IncrementalDecoder(self)

    # ---------------------------------------------------------------- inspection
    def merge_tree(self, i: int):
        """How token i was built: a leaf is an id (a byte token, a special token, or a token no
        merge produces); an inner node is (id, left_tree, right_tree). A token that BPE cannot
        reach from its own bytes (possible with hand-made rank files) is (id, *part_trees)."""
        data = self.id_to_bytes(i)
        if i in self._special_ids and self.vocab.get(i) != data:
            return i
        if self.merges is not None:
            return self._hf_tree(i, depth=0)
        if len(data) < 2:
            return i
        ids = [self._byte_ids[b] for b in data]
        if None in ids:
            return i
        trees = merge_with_trees(ids, self._pairs)
        if len(trees) == 1 and (trees[0] == i or trees[0][0] == i):
            return trees[0]
        return (i, *trees)

    def _hf_tree(self, i: int, depth: int):
        if self._producer is None:
            producer: dict[int, tuple[int, tuple[int, int]]] = {}
            for pair, (index, new) in self._pairs.items():
                if new not in producer or index < producer[new][0]:
                    producer[new] = (index, pair)
            self._producer = {new: pair for new, (_, pair) in producer.items()}
        pair = self._producer.get(i)
        if pair is None or depth > 10_000:
            return i
        return (i, self._hf_tree(pair[0], depth + 1), self._hf_tree(pair[1], depth + 1))

    def __repr__(self) -> str:
        rule = "ranks" if self.merges is None else f"{len(self.merges)} merges"
        return (f"<bpe.Tokenizer {self.name!r}: vocab {self.vocab_size}, {rule}, "
                f"{len(self.special_tokens)} special, pattern {patterns.name_of(self.pattern)}>")
