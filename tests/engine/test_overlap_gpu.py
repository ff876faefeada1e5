"""Overlap scheduling on CUDA (float32, Triton kernels): the runner's submit never waits for the
device (torch's sync debug mode raises on any synchronising call inside it), the drawn ids (and
the TokenChoices of the requests that ask, SamplingParams.logprobs) come back through the pinned
copies, and the tokens equal overlap off token for token, with and without CUDA graphs; the
greedy requests also equal the CPU engine (sampled ones draw from CUDA generators, whose streams
differ from the CPU's for the same seed). Skipped without a GPU (the device machine runs them)."""
from __future__ import annotations

import pytest
import torch

from llm_playground.model.engine.beam_search import BeamSearchParams
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.sampling_params import SamplingParams
from engine_helpers import prompts, run_all, tiny_loaded

SAMPLED = {0, 3, 6}        # requests with temperature > 0 (i % 3 == 0 below)
OVER = dict(hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=32, intermediate_size=256)


def run(device: str, overlap: bool, cuda_graphs: bool = False, strict: bool = False):
    loaded = tiny_loaded(0, device=device, **OVER)
    e = Engine(loaded, EngineConfig(num_blocks=64, block_size=16, max_num_batched_tokens=48,
                                    cuda_graphs=cuda_graphs, max_num_seqs=16, overlap=overlap))
    ps = prompts(8, 10, 90, seed=6)
    for i, p in enumerate(ps):
        e.add_request(p, SamplingParams(max_tokens=20, ignore_eos=i % 2 == 0,
                                        temperature=0.8 if i % 3 == 0 else 0.0, seed=i,
                                        n=2 if i == 3 else 1,
                                        logprobs=3 if i % 4 == 1 else None))   # choices ride along
    e.add_request(ps[0][:32] + ps[1][:9], SamplingParams(max_tokens=12))     # a prefix hit
    e.add_beam_request(ps[2][:20], BeamSearchParams(beam_width=2, max_tokens=6))
    if strict:
        real = e.runner.submit
        warm = [0]

        def submit(plan):
            if warm[0] < 4:                     # first steps: kernels compile (and may sync)
                warm[0] += 1
                return real(plan)
            torch.cuda.set_sync_debug_mode("error")
            try:
                return real(plan)
            finally:
                torch.cuda.set_sync_debug_mode("default")

        e.runner.submit = submit
    got, _ = run_all(e)
    assert e.bm.num_owned == 0
    return got


@pytest.mark.gpu
def test_overlap_on_cuda_equals_overlap_off_and_the_cpu():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cuda_off = run("cuda", False)
    assert run("cuda", True) == cuda_off
    assert run("cuda", True, cuda_graphs=True) == cuda_off
    assert greedy(cuda_off) == greedy(run("cpu", False))
    assert len(greedy(cuda_off)) >= 7


def greedy(got: dict) -> dict:
    """The outputs of the greedy requests (keys (request id, sample index))."""
    return {k: v for k, v in got.items() if k[0] not in SAMPLED}


@pytest.mark.gpu
def test_submit_never_synchronises_with_the_device():
    """No .item(), no blocking copy, no stream sync inside ModelRunner.submit with overlap (the
    repetition penalty, not used here, still copies its ids the blocking way)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    assert run("cuda", True, strict=True) == run("cuda", False)
