"""Train a byte-level BPE tokenizer: count pre-tokens, then merge with incremental pair counts.

Algorithm (no recount per merge):
1. `bpe.counting` counts distinct pre-tokens (streamed, optionally in several processes).
2. Each distinct pre-token becomes a word: a list of symbol ids with its count. `pair_counts`
   holds the count of every adjacent pair over all words (overlaps included: "aaa" holds
   (a, a) twice), `where` maps a pair to the words that (may) hold it, and a heap holds
   (-count, pair) entries refreshed lazily: a popped entry whose count is stale is pushed back
   with the current count.
3. A merge rewrites only the words in `where[pair]`, leftmost occurrence first, and applies the
   count changes around each occurrence (previous symbol, next symbol), exactly as Hugging Face
   tokenizers' BpeTrainer does, so pairs touching the new token are pushed on the heap.

Tie-break (deterministic, and the same as Hugging Face's BpeTrainer with a full byte-level
alphabet): the highest count wins; among equal counts the pair (left, right) with the smallest
symbol order, where the 256 byte symbols are ordered by the code point of their GPT-2
byte-to-unicode character ('!'..'~', then '¡'..'¬', '®'..'ÿ', then the remapped control and
space bytes) and merged symbols come after them in creation order.

Result ids: bytes are ids 0..255 in byte order, merged tokens 256.. in merge order, special
tokens after them. Training stops at `vocab_size` (bytes + merged tokens + specials) or when the
best pair occurs fewer than `min_frequency` times. The returned Tokenizer uses the merges list
(Hugging Face rule), which is exactly the training procedure replayed on new text.
"""
from __future__ import annotations

from collections import defaultdict
from heapq import heapify, heappop, heappush
from typing import Callable

from llm_playground.bpe import patterns
from llm_playground.bpe.counting import CorpusError, count_pretokens
from llm_playground.bpe.tokenizer import Tokenizer, _fix_surrogates

ProgressFn = Callable[[int, int], None]


def byte_symbol_order() -> list[int]:
    """Bytes sorted by the code point of their GPT-2 byte-to-unicode character."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    rest = [b for b in range(256) if b not in set(printable)]
    return printable + rest  # the rest map to code points 256.. in byte order


def _check_args(vocab_size, special_tokens, min_frequency) -> tuple[str, ...]:
    if isinstance(special_tokens, str):
        special_tokens = (special_tokens,)
    specials = tuple(special_tokens)
    if any(not isinstance(t, str) or not t for t in specials):
        raise ValueError("special tokens must be non-empty strings")
    if len(set(specials)) != len(specials):
        raise ValueError("special tokens must be distinct")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise ValueError(f"vocab_size must be an integer, got {vocab_size!r}")
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size {vocab_size} is below 256 byte tokens + "
                         f"{len(specials)} special tokens = {256 + len(specials)}")
    if not isinstance(min_frequency, int) or min_frequency < 0:
        raise ValueError(f"min_frequency must be a non-negative integer, got {min_frequency!r}")
    return specials


def train(files_or_iterable, vocab_size: int, pattern: str = "cl100k", special_tokens=(),
          min_frequency: int = 2, progress: ProgressFn | None = None,
          num_workers: int | None = None, invalid_utf8: str = "error",
          warn: Callable[[str], None] | None = None, name: str = "trained") -> Tokenizer:
    """Train on files / directories / globs, or on an iterable of str documents.

    progress(done, total) is called as merges are made (total = merges wanted; training may stop
    earlier when pairs fall under min_frequency). invalid_utf8: "error" (default) or "replace"
    (bad bytes become U+FFFD and `warn` gets one message per file). Raises ValueError (or its
    subclass bpe.counting.CorpusError) with a one-line message on bad arguments or input, and
    when the pattern leaves some of the corpus text unmatched (encoding would drop that text).
    """
    specials = _check_args(vocab_size, special_tokens, min_frequency)
    regex_str = patterns.resolve(pattern)
    counts = count_pretokens(files_or_iterable, regex_str, specials, num_workers,
                             invalid_utf8, warn)
    if not counts.chars:
        raise CorpusError("the corpus is empty: no text to train on")
    _check_coverage(pattern, counts)
    merges_wanted = vocab_size - 256 - len(specials)
    token_bytes, merges = learn_merges(counts, merges_wanted, min_frequency, progress)

    vocab = {b: bytes([b]) for b in range(256)}
    vocab.update({256 + k: token_bytes[256 + k] for k in range(len(token_bytes) - 256)})
    special_ids = {t: len(token_bytes) + j for j, t in enumerate(specials)}
    return Tokenizer(regex_str, vocab, merges, special_ids, name=name)


def _check_coverage(pattern: str, counts) -> None:
    """Refuse a pattern that leaves corpus text unmatched: encoding keeps only what the pattern
    matches (as tiktoken does), so the tokenizer would drop that text. The named patterns match
    everything; a user's regex must too."""
    if counts.gap is None:
        return
    matched, chars = counts.matched, counts.chars
    rule = (f"a custom regex must match all of the text, since encoding drops what it does not "
            f"match; or use a known pattern: {patterns.known_names()}")
    if not counts:
        raise ValueError(f"pattern '{pattern}' matched nothing in the corpus (0 chunks in "
                         f"{chars:,} characters): {rule}")
    share = 100.0 * (chars - matched) / chars
    share_text = f"{share:.3g}%" if share >= 0.001 else "under 0.001%"
    raise ValueError(f"pattern '{pattern}' leaves {share_text} of the corpus unmatched (the first "
                     f"such text: {counts.gap!r}): {rule}")


def _words_from_counts(counts, to_symbol: bytes) -> tuple[list[list[int]], list[int]]:
    words, freqs = [], []
    for piece, c in counts.items():
        try:
            data = piece.encode("utf-8")
        except UnicodeEncodeError:
            data = _fix_surrogates(piece).encode("utf-8")
        words.append(list(data.translate(to_symbol)))
        freqs.append(c)
    return words, freqs


def learn_merges(counts, merges_wanted: int, min_frequency: int = 2,
                 progress: ProgressFn | None = None):
    """From {pre-token: count} learn up to `merges_wanted` new tokens.

    Returns (token_bytes, merges): token_bytes[i] for output id i (0..255 are the bytes), and the
    merges as (bytes_a, bytes_b) in order (a merge may rebuild bytes already in the vocab; it
    then adds no new token, as in Hugging Face's trainer)."""
    order = byte_symbol_order()  # symbol s < 256 stands for byte order[s]
    to_symbol = bytes(order.index(b) for b in range(256))
    sym_bytes = [bytes([order[s]]) for s in range(256)]  # symbol -> bytes
    sym_of_bytes = {b: s for s, b in enumerate(sym_bytes)}
    sym_out_id = list(order)  # symbol -> output id (bytes keep their byte value)

    words, freqs = _words_from_counts(counts, to_symbol)
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, w in enumerate(words):
        if len(w) < 2:
            continue
        c = freqs[wi]
        for pair in zip(w, w[1:]):
            pair_counts[pair] += c
            where[pair].add(wi)
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapify(heap)

    merges: list[tuple[int, int]] = []
    new_tokens = 0
    step = max(1, merges_wanted // 200)
    while new_tokens < merges_wanted and heap:
        neg, a, b = heappop(heap)
        current = pair_counts.get((a, b), 0)
        if current != -neg:
            if current > 0:
                heappush(heap, (-current, a, b))
            continue
        if current < max(1, min_frequency):
            break
        merged = sym_bytes[a] + sym_bytes[b]
        z = sym_of_bytes.get(merged)
        if z is None:
            z = len(sym_bytes)
            sym_bytes.append(merged)
            sym_of_bytes[merged] = z
            sym_out_id.append(256 + new_tokens)
            new_tokens += 1
        merges.append((a, b))
        del pair_counts[(a, b)]
        for pair, change in _merge_words(words, freqs, where, a, b, z).items():
            total = pair_counts.get(pair, 0) + change
            if total > 0:
                pair_counts[pair] = total
                if change > 0:
                    heappush(heap, (-total, pair[0], pair[1]))
            else:
                pair_counts.pop(pair, None)
        if progress is not None and (new_tokens % step == 0 or new_tokens == merges_wanted):
            progress(new_tokens, merges_wanted)
    if progress is not None:
        progress(new_tokens, merges_wanted)

    token_bytes = [b""] * (256 + new_tokens)
    for s, out_id in enumerate(sym_out_id):
        token_bytes[out_id] = sym_bytes[s]
    return token_bytes, [(sym_bytes[a], sym_bytes[b]) for a, b in merges]


def _merge_words(words, freqs, where, a: int, b: int, z: int) -> dict[tuple[int, int], int]:
    """Replace every (a, b) by z, leftmost first, in the words that may hold it; return the
    pair-count changes (HF's rule: each occurrence turns (prev, a) into (prev, z) and (b, next)
    into (z, next), with prev already rewritten)."""
    delta: dict[tuple[int, int], int] = defaultdict(int)
    for wi in where.pop((a, b), ()):
        w = words[wi]
        n = len(w)
        last = n - 1
        index = w.index
        c = freqs[wi]
        out = None
        i = start = 0
        while True:
            try:
                i = index(a, i, last)
            except ValueError:
                break
            if w[i + 1] != b:
                i += 1
                continue
            if out is None:
                out = w[:i]
            else:
                out.extend(w[start:i])
            if out:
                p = out[-1]
                delta[p, a] -= c
                delta[p, z] += c
                where[p, z].add(wi)
            if i + 2 < n:
                q = w[i + 2]
                delta[b, q] -= c
                delta[z, q] += c
                where[z, q].add(wi)
            out.append(z)
            i += 2
            start = i
        if out is not None:
            out.extend(w[start:])
            words[wi] = out
    delta.pop((a, b), None)
    return delta
