"""The cache-aware router's policy: which data-parallel replica should serve a prompt.

Modelled on SGLang's cache-aware router (sgl-router): the router keeps, per replica, an
approximate tree of the prompts it sent there, and
  1. if the load is unbalanced (max - min running > `balance_abs` and max > `balance_rel` x
     min), it sends the request to the least-loaded replica;
  2. else to the replica whose tree holds the longest prefix of the prompt, when that prefix
     is at least `cache_threshold` of the prompt;
  3. else to the least-loaded replica, ties going to the smallest tree (the most cache room).
The chosen replica's tree then takes the prompt. "Approximate": the tree is kept at chunk
granularity (`chunk` tokens: set it to the engine's block size, the unit the replica's prefix
cache can reuse), as a set of chained chunk hashes, i.e. a radix tree whose edges are whole
chunks; it is capped at `capacity` chunks per replica with LRU eviction, and it does not know
what the replica's own cache evicted (SGLang's tree does not either). A replica that stops is
forgotten (`forget`). `RoundRobin` is the baseline with the same interface. Pure Python: no
processes, no engines (dp_replicas.py runs them).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class RouterConfig:
    """The router's thresholds (SGLang's names and roles; values chosen for small pools)."""
    # Tokens per tree edge: the replica's KV block size, what its prefix cache reuses.
    chunk: int = 16
    # Follow the cache only when the best replica holds at least this share of the prompt
    # (SGLang's cache_threshold default, 0.5): a short shared system line is not worth a
    # queue that is longer.
    cache_threshold: float = 0.5
    # Unbalanced when max - min running requests exceeds this ... (SGLang: 32 on big servers;
    # here engines run a few requests each: over 30 seeds of 4 prefixes in waves of 4 over 2
    # replicas, 2 keeps the busiest share <= 0.625 where 3 and 4 let it reach 0.70, for a
    # matched share of 0.81 instead of 0.83)
    balance_abs: int = 2
    # ... and max exceeds this multiple of min.
    balance_rel: float = 1.5
    # Chunks remembered per replica (LRU beyond): about what a replica's pool can hold.
    capacity: int = 65536

    def __post_init__(self) -> None:
        if not (isinstance(self.chunk, int) and self.chunk >= 1):
            raise ValueError(f"chunk must be an int >= 1, got {self.chunk!r}")
        if not 0.0 <= self.cache_threshold <= 1.0:
            raise ValueError(f"cache_threshold must be in [0, 1], got {self.cache_threshold!r}")
        if not (isinstance(self.balance_abs, int) and self.balance_abs >= 0):
            raise ValueError(f"balance_abs must be an int >= 0, got {self.balance_abs!r}")
        if not self.balance_rel >= 1.0:
            raise ValueError(f"balance_rel must be >= 1, got {self.balance_rel!r}")
        if not (isinstance(self.capacity, int) and self.capacity >= 1):
            raise ValueError(f"capacity must be an int >= 1, got {self.capacity!r}")


class PrefixTree:
    """One replica's approximate prefix tree: chained hashes of whole chunks, LRU-capped."""

    def __init__(self, chunk: int, capacity: int) -> None:
        self.chunk = chunk
        self.capacity = capacity
        self._nodes: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._nodes)

    def _keys(self, ids: list[int]):
        h = 0
        for i in range(0, len(ids) - len(ids) % self.chunk, self.chunk):
            h = hash((h, tuple(ids[i:i + self.chunk])))
            yield h

    def match(self, ids: list[int]) -> int:
        """Tokens of the longest prefix of `ids` (whole chunks) in the tree."""
        n = 0
        for key in self._keys(ids):
            if key not in self._nodes:
                break
            n += self.chunk
        return n

    def insert(self, ids: list[int]) -> None:
        """Add every whole-chunk prefix of `ids` (most recently used), evicting the oldest."""
        for key in self._keys(ids):
            self._nodes[key] = None
            self._nodes.move_to_end(key)
        while len(self._nodes) > self.capacity:
            self._nodes.popitem(last=False)


class PrefixRouter:
    """Cache-aware routing over `n` replicas (see the module docstring)."""
    name = "prefix"

    def __init__(self, n: int, config: RouterConfig | None = None) -> None:
        self.config = config or RouterConfig()
        self.trees = [PrefixTree(self.config.chunk, self.config.capacity) for _ in range(n)]
        self.matched_tokens = 0          # tokens of prompts the chosen replica's tree held
        self.prompt_tokens = 0

    def route(self, ids: list[int], loads: list[int], alive: list[bool]) -> int:
        """The replica for prompt `ids`, given each replica's running requests and liveness."""
        live = [i for i, ok in enumerate(alive) if ok]
        if not live:
            raise RuntimeError("no data-parallel replica is alive")
        cfg = self.config
        lo, hi = min(loads[i] for i in live), max(loads[i] for i in live)
        least = min(live, key=lambda i: (loads[i], len(self.trees[i]), i))
        matches = {i: self.trees[i].match(ids) for i in live}
        best = max(live, key=lambda i: (matches[i], -loads[i], -i))
        if hi - lo > cfg.balance_abs and hi > cfg.balance_rel * lo:
            choice = least
        elif ids and matches[best] >= cfg.cache_threshold * len(ids) and matches[best] > 0:
            choice = best
        else:
            choice = least
        self.trees[choice].insert(ids)
        self.matched_tokens += matches[choice]
        self.prompt_tokens += len(ids)
        return choice

    def forget(self, replica: int) -> None:
        """A replica stopped: its cache is gone."""
        self.trees[replica] = PrefixTree(self.config.chunk, self.config.capacity)


class RoundRobin:
    """The baseline: replicas in turn (skipping dead ones), blind to prompts and loads."""
    name = "round_robin"

    def __init__(self, n: int, config: RouterConfig | None = None) -> None:
        self.n = n
        self._next = 0
        self.matched_tokens = 0
        self.prompt_tokens = 0

    def route(self, ids: list[int], loads: list[int], alive: list[bool]) -> int:
        """The next live replica in turn."""
        if not any(alive):
            raise RuntimeError("no data-parallel replica is alive")
        while not alive[self._next % self.n]:
            self._next += 1
        choice = self._next % self.n
        self._next += 1
        self.prompt_tokens += len(ids)
        return choice

    def forget(self, replica: int) -> None:
        """Nothing to forget."""


POLICIES = {"prefix": PrefixRouter, "round_robin": RoundRobin}
