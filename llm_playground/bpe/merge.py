"""The BPE merge of one pre-token: turn a list of byte-token ids into the final token ids.

Both merge rules reduce to one question asked of a *pair table*: `table[a, b]` is
`(rank, merged_id)` when the adjacent tokens a, b may merge, else None. The pair with the lowest
rank merges first; among equal ranks the leftmost one (as tiktoken and Hugging Face both do).

- `RankPairTable` is tiktoken's rule: rank = id of the concatenated bytes, filled lazily.
- `MergePairTable` is Hugging Face's rule: rank = index in the merges list.

Two algorithms give identical results:
- `merge_simple`: a rank list scanned with `min`/`index` (C speed), O(n^2) worst case; fastest
  for the short pieces of ordinary text.
- `merge_heap`: a linked list of symbols and a heap of candidate pairs with lazy invalidation,
  O(n log n); used for long pieces (`"a" * 1_000_000`) so the worst case is not quadratic.

`merge_rank_bytes` is `merge_simple` for the tiktoken rule working on the piece's bytes: a pair's
rank is `ranks.get(bytes of the two parts)`, a slice of the piece, so no pair table (and no
Python `__missing__` call per pair) is needed on the cache-miss path of short pieces.

This module knows nothing of text, regexes or special tokens (see `bpe.tokenizer`).
"""
from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Mapping

INF = 1 << 62  # rank of a pair that cannot merge
HEAP_MIN_LEN = 64  # pieces at least this many bytes use the heap merge (measured crossover)


class RankPairTable(dict):
    """tiktoken rule: tokens a, b merge into the token whose bytes are bytes(a) + bytes(b).

    Entries are computed on first use and remembered (negative answers too); `clear()` it when it
    grows large. `id_bytes` maps id -> bytes, `ranks` bytes -> id (the id is the rank).
    """

    __slots__ = ("id_bytes", "ranks")

    def __init__(self, id_bytes: Mapping[int, bytes], ranks: Mapping[bytes, int]):
        super().__init__()
        self.id_bytes = id_bytes
        self.ranks = ranks

    def __missing__(self, pair: tuple[int, int]):
        rank = self.ranks.get(self.id_bytes[pair[0]] + self.id_bytes[pair[1]])
        entry = None if rank is None else (rank, rank)
        self[pair] = entry
        return entry


class MergePairTable(dict):
    """Hugging Face rule: pair -> (index in the merges list, id of the merged token)."""

    __slots__ = ()

    def __missing__(self, pair: tuple[int, int]):
        return None


def merge_simple(ids: list[int], table: Mapping) -> list[int]:
    """Merge in place and return `ids`; best for short pieces."""
    n = len(ids)
    if n < 2:
        return ids
    ranks = []
    for i in range(n - 1):
        entry = table[ids[i], ids[i + 1]]
        ranks.append(INF if entry is None else entry[0])
    while ranks:
        best = min(ranks)
        if best == INF:
            break
        i = ranks.index(best)  # leftmost of the lowest rank
        new = table[ids[i], ids[i + 1]][1]
        ids[i] = new
        del ids[i + 1]
        del ranks[i]
        if i > 0:
            entry = table[ids[i - 1], new]
            ranks[i - 1] = INF if entry is None else entry[0]
        if i < len(ids) - 1:
            entry = table[new, ids[i + 1]]
            ranks[i] = INF if entry is None else entry[0]
    return ids


def merge_rank_bytes(data: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """tiktoken rule on raw bytes: the same ids as `merge_simple(byte ids, RankPairTable)`.

    `bounds` holds the start of every part plus len(data); `pair_ranks[k]` is the rank of parts
    k and k + 1 joined (INF when that is not a token). Every byte of `data` must be a token.
    """
    get = ranks.get
    n = len(data)
    if n < 2:
        return [ranks[data]] if n else []
    pair_ranks = [get(data[i:i + 2], INF) for i in range(n - 1)]
    bounds = list(range(n + 1))
    while True:
        best = min(pair_ranks)
        if best == INF:
            break
        k = pair_ranks.index(best)  # leftmost of the lowest rank
        del bounds[k + 1]
        del pair_ranks[k]
        if k > 0:
            pair_ranks[k - 1] = get(data[bounds[k - 1]:bounds[k + 1]], INF)
        if k < len(pair_ranks):
            pair_ranks[k] = get(data[bounds[k]:bounds[k + 2]], INF)
        elif not pair_ranks:
            break
    return [ranks[data[bounds[k]:bounds[k + 1]]] for k in range(len(bounds) - 1)]


def merge_heap(ids: list[int], table: Mapping) -> list[int]:
    """Same result as `merge_simple` in O(n log n): linked list + heap with lazy invalidation.

    A heap key is `rank << 32 | pos` (ints compare faster than tuples): lowest rank first, then
    the leftmost position. A popped key is acted on only if the pair now starting at `pos`
    still has that rank; otherwise it is stale (the current pair has its own key).
    """
    n = len(ids)
    if n < 2:
        return list(ids)
    if n >= 1 << 32:
        raise ValueError("piece too long for the heap merge (4 GiB)")
    tok = list(ids)  # token of the symbol starting at each position; -1 once merged away
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        entry = table[tok[i], tok[i + 1]]
        if entry is not None:
            heap.append(entry[0] << 32 | i)
    heapify(heap)
    mask = (1 << 32) - 1
    while heap:
        key = heappop(heap)
        i = key & mask
        left = tok[i]
        j = nxt[i]
        if left < 0 or j < 0:
            continue
        entry = table[left, tok[j]]
        if entry is None or entry[0] != key >> 32:
            continue
        new = entry[1]
        tok[i] = new
        tok[j] = -1
        k = nxt[j]
        nxt[i] = k
        if k >= 0:
            prv[k] = i
            entry = table[new, tok[k]]
            if entry is not None:
                heappush(heap, entry[0] << 32 | i)
        p = prv[i]
        if p >= 0:
            entry = table[tok[p], new]
            if entry is not None:
                heappush(heap, entry[0] << 32 | p)
    out = []
    i = 0
    while i >= 0:
        out.append(tok[i])
        i = nxt[i]
    return out


def merge(ids: list[int], table: Mapping) -> list[int]:
    """Pick the algorithm by length (both give the same ids)."""
    if len(ids) < HEAP_MIN_LEN:
        return merge_simple(ids, table)
    return merge_heap(ids, table)


def merge_with_trees(ids: list[int], table: Mapping) -> list:
    """Like `merge_simple`, but return for each final token its tree: a leaf is an id, an inner
    node is (merged_id, left_tree, right_tree). For `Tokenizer.merge_tree` (short tokens only)."""
    trees: list = list(ids)
    ids = list(ids)
    while len(ids) > 1:
        best, best_i = INF, -1
        for i in range(len(ids) - 1):
            entry = table[ids[i], ids[i + 1]]
            if entry is not None and entry[0] < best:
                best, best_i = entry[0], i
        if best_i < 0:
            break
        new = table[ids[best_i], ids[best_i + 1]][1]
        trees[best_i:best_i + 2] = [(new, trees[best_i], trees[best_i + 1])]
        ids[best_i:best_i + 2] = [new]
    return trees
