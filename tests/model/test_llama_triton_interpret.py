"""The model through the Triton kernels (TRITON_INTERPRET=1, CPU) equals transformers' logits.

Runs in a subprocess so that the interpreter variable is set before triton is imported, whatever
other tests imported first. Covers the wiring model -> kernels.dispatch -> Triton kernels (every
kernel: KV write, paged prefill and decode attention, RMSNorm with residual, SwiGLU, RoPE) on a
scattered paged cache, for MQA and GQA.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import transformers  # noqa: F401  (test oracle: installed by make test)
pytest.importorskip("triton", reason="triton installs on Linux only (the CPU interpreter needs it)")

HERE = Path(__file__).parent
SCRIPT = r"""
import sys, tempfile
from pathlib import Path
import torch
from llm_playground.kernels import dispatch
from llm_playground.model.weights import hf_folder
from llm_playground.model.weights.loader import build_model
from paged_helpers import Pager
from tiny_models import random_hf_model
dispatch.set_backend("triton")
worst = 0.0
for heads in [(4, 1), (8, 2)]:
    d = Path(tempfile.mkdtemp())
    hf = random_hf_model(5, num_attention_heads=heads[0], num_key_value_heads=heads[1],
                         hidden_size=128, intermediate_size=192)
    hf.save_pretrained(d)
    cfg = hf_folder.read_hf_config(d)
    _, get = hf_folder.open_hf_weights(d, cfg)
    ours = build_model(cfg, get, "float32", torch.float32, torch.device("cpu"))
    pager = Pager(cfg, num_blocks=40, block_size=4, seed=1)
    ids = list(range(7, 50, 2))
    steps = [len(ids)] + [1] * 3
    for n in steps:
        if n == 1:
            ids.append(int(ref[-1].argmax()))
        logits = ours.compute_logits(ours.forward(torch.tensor(ids[-n:]), pager.batch([(0, n)]), pager.kv))
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0]
        worst = max(worst, (logits - ref[-n:]).abs().max().item())
print("WORST", worst)
"""


def test_model_through_triton_interpreter_matches_transformers():
    env = dict(os.environ, TRITON_INTERPRET="1", KERNELS_BACKEND="triton",
               PYTHONPATH=os.pathsep.join([str(HERE.parent.parent), str(HERE)]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst = float(proc.stdout.split("WORST")[-1])
    assert worst < 1e-4, f"max abs logit error through the Triton kernels: {worst}"
