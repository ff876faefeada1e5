"""Re-rotation and tile maps on CUDA tensors agree with the CPU path (runs on the device machine)."""
from __future__ import annotations

import pytest
import torch

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.network.kv_cache import KVCache
from llm_playground.model.engine.attention_patterns import block_map
from llm_playground.model.engine.eviction import rerotate_keys


def rope_tables(max_pos=256, dim=16, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return ang.cos().float(), ang.sin().float()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rerotate_on_cuda_matches_cpu(dtype):
    cos, sin = rope_tables()
    cpu = KVCache(2, 8, 4, 2, 16, dtype, "cpu")
    cpu.k_pool.copy_(torch.randn(cpu.k_pool.shape, generator=torch.Generator().manual_seed(0)))
    gpu = KVCache(2, 8, 4, 2, 16, dtype, "cuda")
    gpu.k_pool.copy_(cpu.k_pool)
    gpu.v_pool.copy_(cpu.v_pool)
    rerotate_keys(cpu, [1, 5, 6], -12, cos, sin)
    rerotate_keys(gpu, [1, 5, 6], -12, cos.cuda(), sin.cuda())
    torch.testing.assert_close(gpu.k_pool.cpu().float(), cpu.k_pool.float(), atol=1e-2 if
                               dtype != torch.float32 else 1e-6, rtol=1e-2)
    assert torch.equal(gpu.v_pool.cpu(), cpu.v_pool)


@pytest.mark.gpu
def test_block_map_on_cuda_matches_cpu():
    spec = MaskSpec(window=100, stride=7, sinks=5)
    q_lens = torch.tensor([1, 300, 77])
    kv = torch.tensor([900, 300, 1000])
    a = block_map(spec, kv - q_lens, q_lens, kv, 64, 32)
    b = block_map(spec, (kv - q_lens).cuda(), q_lens.cuda(), kv.cuda(), 64, 32, device="cuda")
    assert b.any.is_cuda
    assert torch.equal(a.any, b.any.cpu()) and torch.equal(a.full, b.full.cpu())
