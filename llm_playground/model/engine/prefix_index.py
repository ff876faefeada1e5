"""The prefix cache's index: hash -> physical block, the hash chain and the hit counters.

Every FULL block whose K/V is written gets a hash chained over its parent's hash and its token
ids; the index maps that hash to the block. The token ids are stored on the block (in the
`BlockPool`) and compared on lookup, so a hash collision can never share wrong K/V. The chain's
root is salted with the attention pattern: K/V of layers past the first depend on the mask, so
blocks computed under `atrous:4` must never serve a dense request.

It keeps the cumulative hit and query counters. It does not own the blocks (their ref counts,
hashes and the LRU live in model/engine/block_pool.py) nor the sequences' chains (those live in
model/engine/sequence_tables.py); the block manager drops an entry when the pool evicts a block.
"""
from __future__ import annotations

from llm_playground.model.engine.block_pool import BlockPool

_ROOT_HASH = hash(("kv-prefix-root",))


class PrefixIndex:
    """hash -> block for the full blocks of `pool` registered in the prefix cache."""

    def __init__(self, pool: BlockPool, block_size: int, enabled: bool = True) -> None:
        self.pool = pool
        self.block_size = block_size
        self.enabled = enabled
        self._block_of: dict[int, int] = {}
        self._hits = 0         # tokens served from the cache, cumulative
        self._queries = 0      # prompt tokens looked up, cumulative

    @staticmethod
    def chain_hash(parent: int, tokens) -> int:
        """The hash of a full block holding `tokens` whose predecessor's hash is `parent`."""
        return hash((parent, tuple(tokens)))

    @staticmethod
    def root_hash(salt: str = "") -> int:
        """The chain's root for an attention pattern named `salt`."""
        return hash((_ROOT_HASH, salt))

    @property
    def prefix_hits(self) -> int:
        """Prompt tokens served from the cache, cumulative."""
        return self._hits

    @property
    def prefix_queries(self) -> int:
        """Prompt tokens looked up, cumulative."""
        return self._queries

    def block_for(self, h: int) -> int | None:
        """The block registered under hash h, if any."""
        return self._block_of.get(h)

    def lookup(self, token_ids: list[int], salt: str = "") -> list[int]:
        """Physical blocks caching the longest prefix of token_ids made of full blocks, leaving at
        least one token to compute (a prompt cached up to a block boundary still needs logits)."""
        if not self.enabled:
            return []
        bs, pool, index = self.block_size, self.pool, self._block_of
        found: list[int] = []
        parent = self.root_hash(salt)
        for i in range((len(token_ids) - 1) // bs):
            toks = tuple(token_ids[i * bs:(i + 1) * bs])
            h = self.chain_hash(parent, toks)
            b = index.get(h)
            if b is None or pool.tokens_of(b) != toks:
                break
            found.append(b)
            parent = h
        return found

    def register(self, b: int, h: int, tokens: tuple[int, ...]) -> None:
        """Block b now holds `tokens` under chain hash h, unless h is already cached elsewhere or
        b already carries a hash (first registration wins; the block's K/V is immutable)."""
        if h not in self._block_of and self.pool.hash_of(b) is None:
            self.pool.set_hash(b, h, tokens)
            self._block_of[h] = b

    def forget(self, h: int) -> None:
        """Drop the entry of hash h (its block was evicted)."""
        del self._block_of[h]

    def record_query(self, num_tokens: int, num_hit: int) -> None:
        """Count an admission that looked up num_tokens prompt tokens and reused num_hit."""
        self._queries += num_tokens
        self._hits += num_hit

    def entries(self) -> dict[int, int]:
        """A copy of hash -> block (for invariant checks)."""
        return dict(self._block_of)
