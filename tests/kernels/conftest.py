"""Kernel tests: run the Triton kernels under TRITON_INTERPRET=1 on CPU when there is no GPU.

The interpreter is chosen when triton's @jit decorators run, so the variable is set here, before
any test module imports triton; kernel modules imported earlier (by another test directory) are
reloaded so their decorators see it. With CUDA present nothing changes: the gpu-marked tests run
the compiled kernels, and the interpreter tests skip (they would hand CPU tensors to compiled code).
"""
from __future__ import annotations

import importlib
import os
import sys


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


INTERPRET = not _cuda()
if INTERPRET:
    os.environ["TRITON_INTERPRET"] = "1"
    # tile helpers before the kernel that imports them
    _kernel_modules = ("llm_playground.kernels.flash_prefill_tiles", "llm_playground.kernels.flash_prefill",
                       "llm_playground.kernels.paged_decode", "llm_playground.kernels.triton_attention", "llm_playground.kernels.kv_write",
                       "llm_playground.kernels.rmsnorm", "llm_playground.kernels.swiglu", "llm_playground.kernels.rope_triton",
                       "llm_playground.kernels.fused_linear", "llm_playground.kernels.quant_matmul")
    # kv_write and paged_decode are in the list above; kv_quant has no kernels
    if any(name in sys.modules for name in _kernel_modules):
        import triton  # noqa: F401  (already imported by whoever imported the kernels)
        for name in _kernel_modules:
            if name in sys.modules:
                importlib.reload(sys.modules[name])
