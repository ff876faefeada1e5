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
    _kernel_modules = ("kernels.flash_prefill_tiles", "kernels.flash_prefill",
                       "kernels.paged_decode", "kernels.triton_attention", "kernels.kv_write",
                       "kernels.rmsnorm", "kernels.swiglu", "kernels.rope_triton",
                       "kernels.fused_linear")
    if any(name in sys.modules for name in _kernel_modules):
        import triton  # noqa: F401  (already imported by whoever imported the kernels)
        for name in _kernel_modules:
            if name in sys.modules:
                importlib.reload(sys.modules[name])
