"""Pattern strings, token masks, density and downsampling against independent definitions."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.engine.attention_patterns import (AttentionPattern, PatternError, downsample, format_pattern,
                            parse_pattern)


def brute_mask(kind: str, args: tuple[int, ...], n: int) -> torch.Tensor:
    """The patterns as the issue words them, one pair at a time (no MaskSpec involved)."""
    m = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(i + 1):  # causal: j <= i
            if kind == "dense":
                ok = True
            elif kind == "local":          # the last W keys, itself included
                ok = j in range(i - args[0] + 1, i + 1)
            elif kind == "atrous":         # i, i-K, i-2K, ...
                ok = j in range(i, -1, -args[0])
            elif kind == "sparse":         # local window or atrous stride
                ok = j in range(i - args[0] + 1, i + 1) or j in range(i, -1, -args[1])
            else:                          # streaming: first S tokens + last W
                ok = j < args[0] or j in range(i - args[1] + 1, i + 1)
            m[i, j] = ok
    return m


PATTERNS = [
    ("dense", ()), ("local", (1,)), ("local", (5,)), ("atrous", (1,)), ("atrous", (3,)),
    ("sparse", (4, 3)), ("sparse", (2, 7)), ("streaming", (1, 4)), ("streaming", (4, 6)),
    ("streaming", (9, 2)),
]


def text_of(kind, args):
    return kind if not args else f"{kind}:{','.join(map(str, args))}"


@pytest.mark.parametrize("kind,args", PATTERNS)
def test_token_mask_matches_maskspec_and_brute_force(kind, args):
    p = parse_pattern(text_of(kind, args))
    for n in (1, 2, 13, 29):
        m = p.token_mask(n)
        assert m.shape == (n, n) and m.dtype == torch.bool
        assert torch.equal(m, p.spec.dense_matrix(n))
        assert torch.equal(m, brute_mask(kind, args, n)), (kind, args, n)


@pytest.mark.parametrize("kind,args", PATTERNS)
def test_parse_format_round_trip(kind, args):
    text = text_of(kind, args)
    p = parse_pattern(text)
    assert p.name == text == str(p) == format_pattern(p.spec)
    assert p.kind == kind
    assert parse_pattern(p.name) == p
    assert parse_pattern(f"  {text.upper()} ") == p


def test_parse_maps_to_the_documented_maskspec():
    assert parse_pattern("dense").spec == MaskSpec()
    assert parse_pattern("local:64").spec == MaskSpec(window=64)
    assert parse_pattern("atrous:8").spec == MaskSpec(stride=8)
    assert parse_pattern("sparse:64,8").spec == MaskSpec(window=64, stride=8)
    assert parse_pattern("streaming:4,64").spec == MaskSpec(window=64, sinks=4)


@pytest.mark.parametrize("bad", [
    "", "Dense:", "dense:3", "local", "local:", "local:0", "local:-3", "local:3.5", "local:x",
    "local:4,5", "atrous:0", "sparse:4", "sparse:4,0", "sparse:,4", "streaming:4",
    "streaming:0,64", "streaming:4,0", "stream:4,64", "windowed:8", "local:1e3",
])
def test_bad_strings_give_one_line_errors(bad):
    with pytest.raises(PatternError) as e:
        parse_pattern(bad)
    msg = str(e.value)
    assert "\n" not in msg and msg


def test_non_string_is_rejected_cleanly():
    with pytest.raises(PatternError):
        parse_pattern(None)  # type: ignore[arg-type]


def test_name_must_match_spec():
    with pytest.raises(PatternError):
        AttentionPattern("local:3", MaskSpec(window=4))


@settings(max_examples=40, deadline=None)
@given(w=st.integers(1, 40), k=st.integers(1, 9), s=st.integers(1, 6), n=st.integers(1, 60),
       kind=st.sampled_from(["dense", "local", "atrous", "sparse", "streaming"]))
def test_density_counts_kept_causal_pairs(w, k, s, n, kind):
    args = {"dense": (), "local": (w,), "atrous": (k,), "sparse": (w, k), "streaming": (s, w)}[kind]
    p = parse_pattern(text_of(kind, args))
    expected = 100.0 * int(brute_mask(kind, args, n).sum()) / (n * (n + 1) / 2)
    assert p.density(n) == pytest.approx(expected)


def test_density_of_dense_is_100_and_of_local_1_is_diagonal():
    assert parse_pattern("dense").density(50) == pytest.approx(100.0)
    assert parse_pattern("local:1").density(50) == pytest.approx(100.0 * 50 / (50 * 51 / 2))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 40), rows=st.integers(1, 12), cols=st.integers(1, 12),
       seed=st.integers(0, 2**31 - 1))
def test_downsample_cells_are_means_of_their_bins(n, m, rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, m, generator=g) < 0.4
    grid = downsample(mask, rows, cols)
    assert grid.shape == (rows, cols)
    for r in range(rows):  # adaptive pooling bins: [floor(r*n/rows), ceil((r+1)*n/rows))
        r0, r1 = (r * n) // rows, -(-((r + 1) * n) // rows)
        for c in range(cols):
            c0, c1 = (c * m) // cols, -(-((c + 1) * m) // cols)
            assert grid[r, c].item() == pytest.approx(mask[r0:r1, c0:c1].float().mean().item())


def test_downsample_rejects_bad_shapes():
    with pytest.raises(ValueError):
        downsample(torch.ones(3, dtype=torch.bool), 2, 2)
    with pytest.raises(ValueError):
        downsample(torch.ones(3, 3, dtype=torch.bool), 0, 2)
