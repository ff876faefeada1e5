"""Tile maps and freeable blocks against brute force over the token mask."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.engine.attention_patterns import block_map, freeable_blocks, parse_pattern

specs = st.one_of(
    st.just(MaskSpec()),
    st.builds(lambda w: MaskSpec(window=w), st.integers(1, 40)),
    st.builds(lambda k: MaskSpec(stride=k), st.integers(1, 12)),
    st.builds(lambda w, k: MaskSpec(window=w, stride=k), st.integers(1, 40), st.integers(1, 12)),
    st.builds(lambda s, w: MaskSpec(window=w, sinks=s), st.integers(1, 20), st.integers(1, 40)),
    st.builds(lambda s, k: MaskSpec(stride=k, sinks=s), st.integers(1, 20), st.integers(1, 12)),
    st.builds(lambda s, w, k: MaskSpec(window=w, stride=k, sinks=s), st.integers(1, 20),
              st.integers(1, 40), st.integers(1, 12)),
)


def tile_truth(spec, q_start, q_len, kv_len, q_tile, k_tile):
    """any/full per tile from the token mask itself."""
    q_pos = torch.arange(q_start, q_start + q_len)
    k_pos = torch.arange(kv_len)
    allowed = spec.allowed(q_pos[:, None], k_pos[None, :])          # (q_len, kv_len)
    nq, nk = max(1, -(-q_len // q_tile)), max(1, -(-kv_len // k_tile))
    any_ = torch.zeros(nq, nk, dtype=torch.bool)
    full = torch.zeros(nq, nk, dtype=torch.bool)
    for a in range(nq):
        for c in range(nk):
            cell = allowed[a * q_tile:(a + 1) * q_tile, c * k_tile:(c + 1) * k_tile]
            if cell.numel():
                any_[a, c] = bool(cell.any())
                full[a, c] = bool(cell.all())
    return any_, full


@settings(max_examples=300, deadline=None)
@given(spec=specs, kv_len=st.integers(1, 90), q_frac=st.floats(0, 1), q_tile=st.integers(1, 17),
       k_tile=st.integers(1, 17))
def test_block_map_equals_tile_truth(spec, kv_len, q_frac, q_tile, k_tile):
    q_len = max(1, round(kv_len * q_frac))
    q_start = kv_len - q_len
    tm = block_map(spec, q_start, q_len, kv_len, q_tile, k_tile)
    any_, full = tile_truth(spec, q_start, q_len, kv_len, q_tile, k_tile)
    # exact, which implies the safety properties the kernels need: an empty tile has no allowed
    # entry (skipping it loses nothing) and a full tile has all allowed (no mask needed)
    assert torch.equal(tm.any, any_)
    assert torch.equal(tm.full, full)


def test_block_map_batched_equals_per_sequence():
    spec = MaskSpec(window=7, sinks=3)
    q_lens = torch.tensor([1, 9, 30, 4])
    kv_lens = torch.tensor([25, 9, 40, 60])
    tm = block_map(spec, kv_lens - q_lens, q_lens, kv_lens, 4, 8)
    assert tm.any.shape == (4, 8, 8)
    for b in range(4):
        one = block_map(spec, int(kv_lens[b] - q_lens[b]), int(q_lens[b]), int(kv_lens[b]), 4, 8)
        nq, nk = one.any.shape
        assert torch.equal(tm.any[b, :nq, :nk], one.any)
        assert torch.equal(tm.full[b, :nq, :nk], one.full)
        assert not tm.any[b, nq:].any() and not tm.any[b, :, nk:].any()


def test_window_skips_most_tiles_at_long_context():
    tm = parse_pattern("streaming:4,256").block_map(0, 8192, 8192, 64, 64)
    kept = tm.any.float().mean().item()
    assert kept < 0.05  # sink column + a diagonal band of ~5 tiles per row, out of 128


@settings(max_examples=200, deadline=None)
@given(spec=specs, n=st.integers(0, 120), bs=st.integers(1, 16))
def test_freeable_blocks_are_invisible_to_every_future_query(spec, n, bs):
    free = freeable_blocks(spec, n, bs)
    horizon = n + 3 * (spec.window + spec.stride + spec.sinks + bs) + 5
    q_pos = torch.arange(n, horizon)                                  # future queries
    k_pos = torch.arange(horizon)
    seen = spec.allowed(q_pos[:, None], k_pos[None, :]).any(0)       # (horizon,) key ever visible
    for b in free:
        assert (b + 1) * bs <= n, "only full blocks already written may be freed"
        assert not seen[b * bs:(b + 1) * bs].any()
    # and it is complete for sliding patterns: every full block past the sinks that nobody sees
    if spec.window and not spec.stride:
        for b in range(n // bs):
            if not seen[b * bs:(b + 1) * bs].any():
                assert b in free
    else:
        assert len(free) == 0
