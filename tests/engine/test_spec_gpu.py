"""Speculative decoding on CUDA (@pytest.mark.gpu; skipped without a GPU): greedy with prompt
lookup and with self-speculation equals speculation off, token for token, in float32 on the
device (verify rows through the Triton decode kernel with K + 1 queries), and the CPU engine's
tokens. Oracle: the same engine with speculation off."""
from __future__ import annotations

import pytest

from engine_helpers import prompts, run_all, tiny_loaded
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("spec", ["ngram:4", "draft:layers=1:3"])
def test_greedy_with_speculation_equals_off_on_cuda(spec):
    ps = [p + p[:5] + p for p in prompts(6, 4, 20, seed=3)]
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    out = {}
    for device, s in (("cuda", "off"), ("cuda", spec), ("cpu", "off")):
        e = Engine(tiny_loaded(0, device=device),
                   EngineConfig(num_blocks=256, block_size=16, speculate=s, overlap=True))
        for p in ps:
            e.add_request(p, params)
        out[(device, s)], reports = run_all(e)
        if s != "off":
            assert sum(r.spec_rows for r in reports) > 0
    assert out[("cuda", spec)] == out[("cuda", "off")] == out[("cpu", "off")]
