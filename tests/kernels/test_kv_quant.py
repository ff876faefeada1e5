"""The 8-bit KV cache (kernels/kv_quant.py): the quantiser's error bound, the Triton write
against the torch write, every attention path reading the codes against the reference attention
over the same codes dequantised, the pool's byte formula against its real allocation, and the
re-rotation of quantised keys.

CPU: Triton under TRITON_INTERPRET=1 (int8 and fp8 e4m3 reads; the fp8 *write* only on the GPU:
the interpreter's float32 -> fp8 conversion is wrong for some values). GPU (@pytest.mark.gpu): the same checks compiled, at SmolLM2 and Llama-3-8B head shapes.
Oracle: kernels.reference.paged_attention_ref on caches dequantised by kv_quant.dequantize_kv.
"""
from __future__ import annotations

import pytest
import torch

from kernel_cases import build_batch, needs_interpreter, rel_err
from llm_playground.kernels import reference as ref
from llm_playground.kernels.kv_quant import KV_QMAX, dequantize_kv, quantize_kv
from llm_playground.kernels.mask import MaskSpec

CODES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}


def quantised(batch, code):
    kc, ks = quantize_kv(batch.k_cache, code)
    vc, vs = quantize_kv(batch.v_cache, code)
    return kc, vc, ks, vs


@pytest.mark.parametrize("name", ["int8", "fp8"])
def test_quantiser_error_bound(name):
    code = CODES[name]
    x = torch.randn(50, 3, 64) * torch.rand(50, 3, 1) * 10
    x[3, 1] = 0                                                    # an all-zero head stays zero
    codes, scales = quantize_kv(x, code)
    y = dequantize_kv(codes, scales, torch.float32)
    assert torch.equal(y[3, 1], torch.zeros(64))
    step = scales.float()[..., None]
    # int8: half a step; fp8 e4m3 has 3 mantissa bits: half an ulp is 1/16 of the value
    bound = step * 0.5 + 1e-3 * step if name == "int8" else x.abs() / 16 + step * 2 ** -9
    assert bool(((y - x).abs() <= bound + 1e-6).all())
    assert float(scales.float().max()) == pytest.approx(float(x.abs().amax()) / KV_QMAX[code], rel=1e-3)


@pytest.mark.parametrize("name", ["int8", "fp8"])
def test_reference_reads_codes_as_their_values(name):
    """paged_attention_ref with scales == paged_attention_ref over the dequantised caches."""
    b = build_batch([1, 1, 6, 9], [20, 33, 14, 30], 6, 2, 16, 4, torch.float32, holes=[(1, 2)])
    kc, vc, ks, vs = quantised(b, CODES[name])
    args = (b.cu_seqlens_q, b.context_lens, b.block_tables, b.max_q_len, b.max_context_len, 0.25)
    want = ref.paged_attention_ref(b.q, dequantize_kv(kc, ks, torch.float32),
                                   dequantize_kv(vc, vs, torch.float32), *args, num_decodes=2)
    got = ref.paged_attention_ref(b.q, kc, vc, *args, num_decodes=2, k_scale=ks, v_scale=vs)
    assert torch.equal(got, want)


def check_write(name, device, T=9, Hkv=3, D=40, NB=6, BS=4):
    from llm_playground.kernels.kv_write import write_kv
    code = CODES[name]
    g = torch.Generator().manual_seed(0)
    k = (torch.randn(T, Hkv, D, generator=g) * 3).bfloat16()
    v = torch.randn(T, Hkv, D, generator=g).bfloat16()
    slots = torch.tensor([5, -1, 0, 23, 12, 13, 7, -1, 2])[:T]
    caches = [[torch.zeros(NB, BS, Hkv, D, dtype=code, device=dev) for _ in range(2)]
              for dev in ("cpu", device)]                         # [reference, kernel]
    scales = [[torch.zeros(NB, BS, Hkv, dtype=torch.float16, device=dev) for _ in range(2)]
              for dev in ("cpu", device)]
    ref.write_kv_ref(k, v, caches[0][0], caches[0][1], slots, scales[0][0], scales[0][1])
    write_kv(k.to(device), v.to(device), caches[1][0], caches[1][1], slots.to(device),
             scales[1][0], scales[1][1])
    for i in range(2):
        want_s, got_s = scales[0][i], scales[1][i].cpu()
        assert torch.equal(got_s, want_s)
        want = dequantize_kv(caches[0][i], want_s, torch.float32)
        got = dequantize_kv(caches[1][i].cpu(), got_s, torch.float32)
        if name == "int8" and device == "cpu":
            assert torch.equal(caches[1][i].cpu(), caches[0][i])
        else:   # one step of the code at most (fp8: the interpreter rounds its own way)
            tol = want_s.float()[..., None] * (1.0 if name == "int8" else 32.0) + 1e-6
            assert bool(((got - want).abs() <= tol).all())


def check_attention(name, device, q_lens, ctx_lens, Hq, Hkv, D, BS, mask=None, holes=()):
    from llm_playground.kernels.triton_attention import paged_attention
    b = build_batch(q_lens, ctx_lens, Hq, Hkv, D, BS, torch.bfloat16, holes=holes)
    kc, vc, ks, vs = quantised(b, CODES[name])
    decodes = next((i for i, n in enumerate(q_lens) if n != 1), len(q_lens))
    mask = mask or MaskSpec()
    args = (b.cu_seqlens_q, b.context_lens, b.block_tables, b.max_q_len, b.max_context_len, D ** -0.5)
    want = ref.paged_attention_ref(b.q.double(), dequantize_kv(kc, ks, torch.float64),
                                   dequantize_kv(vc, vs, torch.float64), *args, mask,
                                   num_decodes=decodes)
    dev = lambda t: t.to(device)  # noqa: E731
    got = paged_attention(dev(b.q), dev(kc), dev(vc), *[dev(a) if torch.is_tensor(a) else a
                                                        for a in args],
                          mask, decodes, holes=bool(holes), kv_scales=(dev(ks), dev(vs)))
    assert rel_err(got, want) < 1.5e-2


@needs_interpreter
def test_kv_write_quantised_interpreted():
    """int8 only: triton 3.9's interpreter converts float32 to fp8 e4m3 wrongly for some values
    (a code of 128 written as 64, checked 2026-12-07), so the fp8 write is checked on the GPU."""
    check_write("int8", "cpu")


@needs_interpreter
@pytest.mark.parametrize("name", ["int8", "fp8"])
@pytest.mark.parametrize("case", [
    ([1, 1, 1], [17, 40, 5], 6, 2, 16, 4, None, ()),             # decodes only, GQA 3
    ([1, 1, 7, 12], [9, 30, 7, 28], 4, 4, 32, 8, None, ()),      # mixed: decode + prefill (prefix)
    ([1, 5], [33, 21], 4, 1, 16, 4, None, [(0, 2), (1, 1)]),     # holes
    ([1, 1], [40, 26], 4, 2, 16, 4, MaskSpec(window=8, sinks=2), ()),   # a sliding pattern
], ids=["decode", "mixed", "holes", "streaming"])
def test_attention_reads_quantised_kv_interpreted(name, case):
    check_attention(name, "cpu", *case[:6], mask=case[6], holes=case[7])


def test_pool_bytes_follow_the_formula_and_double_the_blocks():
    from llm_playground.model.network.kv_cache import KVCache, bytes_per_block
    for kv_dtype, D in (("auto", 64), ("int8", 64), ("fp8", 128), ("int8", 128)):
        kv = KVCache(3, 5, 16, 3, D, torch.bfloat16, "cpu", kv_dtype=kv_dtype)
        real = sum(t.numel() * t.element_size() for t in
                   (kv.k_pool, kv.v_pool, kv.k_scale_pool, kv.v_scale_pool) if t is not None)
        assert kv.total_bytes == real
        assert kv.bytes_per_block == bytes_per_block(3, 3, D, torch.bfloat16, 16, kv_dtype)
    budget = 64 * 2**20
    plain = KVCache.num_blocks_for_budget(budget, 30, 3, 64, torch.bfloat16, 16)
    eight = KVCache.num_blocks_for_budget(budget, 30, 3, 64, torch.bfloat16, 16, "int8")
    assert 1.9 < eight / plain < 2.0                         # (2 * 64) / (64 + 2) = 1.94


def test_copy_block_copies_scales():
    from llm_playground.model.network.kv_cache import KVCache
    kv = KVCache(2, 4, 4, 2, 8, torch.float32, "cpu", kv_dtype="int8")
    kv.k_pool[:, 1] = 5
    kv.k_scale_pool[:, 1] = 0.5
    kv.copy_block(1, 3)
    assert torch.equal(kv.k_pool[:, 3], kv.k_pool[:, 1])
    assert torch.equal(kv.k_scale_pool[:, 3], kv.k_scale_pool[:, 1])


def test_rerotation_of_quantised_keys_matches_the_float_path():
    """Rotating an int8 cache = dequantise, rotate like the float cache, requantise."""
    from llm_playground.model.engine.eviction import rerotate_keys
    from llm_playground.model.network.kv_cache import KVCache
    from llm_playground.model.network.rope import rope_tables
    cos, sin = rope_tables(16, 10000.0, 64)
    q8 = KVCache(2, 6, 4, 2, 16, torch.float32, "cpu", kv_dtype="int8")
    fl = KVCache(2, 6, 4, 2, 16, torch.float32, "cpu")
    x = torch.randn(2, 6, 4, 2, 16)
    codes, scales = quantize_kv(x, torch.int8)
    q8.k_pool.copy_(codes)
    q8.k_scale_pool.copy_(scales)
    fl.k_pool.copy_(dequantize_kv(codes, scales, torch.float32))
    rerotate_keys(q8, [1, 4], 7, cos, sin)
    rerotate_keys(fl, [1, 4], 7, cos, sin)
    want_codes, want_scales = quantize_kv(fl.k_pool, torch.int8)
    assert torch.equal(q8.k_pool, want_codes) and torch.equal(q8.k_scale_pool, want_scales)
    assert torch.equal(q8.k_pool[:, 0], codes[:, 0])                  # other blocks untouched


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["int8", "fp8"])
def test_attention_reads_quantised_kv_gpu(name):
    if name == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9+")
    check_write(name, "cuda")
    check_attention(name, "cuda", [1] * 16, [500 + 37 * i for i in range(16)], 9, 3, 64, 16)
    check_attention(name, "cuda", [1, 1, 300, 129], [4000, 77, 900, 129], 32, 8, 128, 16)
