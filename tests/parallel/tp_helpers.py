"""Test helpers for tensor parallelism: tiny random model sources, a one-rank reference engine,
and the comparison of greedy runs that tolerates (and reports) only near-ties. Not product code."""
from __future__ import annotations

import torch

from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.parallel.random_model import ModelSource
from llm_playground.model.parallel.tp_runner import private_logits

NEAR_TIE = 1e-4     # a flip where the one-rank top-2 gap is below this (relative) is not a failure


def tiny_source(num_heads: int, num_kv_heads: int, seed: int = 0, vocab: int = 261,
                dtype: str = "float32") -> ModelSource:
    """A random float32 model: hidden 48, 2 layers, head dim 8, an odd vocabulary (padded head)."""
    return ModelSource(random=dict(vocab_size=vocab, hidden_size=48, intermediate_size=72,
                                   num_layers=2, num_heads=num_heads, num_kv_heads=num_kv_heads,
                                   head_dim=8, max_position=512), dtype=dtype, seed=seed)


def engine_config(**over) -> EngineConfig:
    """Small paged pool, 4-token blocks (prompts span several blocks), CPU."""
    fields = dict(num_blocks=96, block_size=4, device="cpu", max_num_seqs=8)
    fields.update(over)
    return EngineConfig(**fields)


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    """n prompts of 5..20 byte ids, the first two sharing a 12-token prefix (prefix cache)."""
    g = torch.Generator().manual_seed(seed)
    out = [torch.randint(0, 256, (int(torch.randint(5, 21, (1,), generator=g)),), generator=g).tolist()
           for _ in range(n)]
    if n >= 2:
        out[1] = out[0][:12] + out[1]
    return out


def run_batch(engine, ps: list[list[int]], params: SamplingParams) -> dict:
    """All prompts queued at once, stepped to the end: {request id: ids of sample 0}."""
    rids = [engine.add_request(p, params) for p in ps]
    ids: dict = {r: [] for r in rids}
    reports = []
    while engine.has_unfinished():
        rep = engine.step()
        reports.append(rep)
        for out in rep.outputs:
            assert out.error is None, out.error
            if out.sample_index == 0:
                ids[out.request_id] += out.new_token_ids
    return {i: ids[r] for i, r in enumerate(rids)}, reports


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (or of the shorter end), None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check_greedy(ref_loaded, prompt, ref_ids, tp_ids) -> str | None:
    """None when equal; a report line when they differ at a near-tie of the one-rank model
    (top-2 gap below NEAR_TIE relative to the top logit); AssertionError otherwise."""
    i = first_difference(ref_ids, tp_ids)
    if i is None:
        return None
    logits = private_logits(ref_loaded.model, prompt + ref_ids[:i])[-1]
    top = torch.topk(logits, 2).values
    gap = float((top[0] - top[1]) / top[0].abs().clamp(min=1e-6))
    assert gap < NEAR_TIE, (f"greedy ids differ at token {i} where the top-2 gap is {gap:.2e} "
                            f"(not a near-tie): one rank {ref_ids}, TP {tp_ids}")
    return f"near-tie at token {i} (gap {gap:.1e})"


def one_rank(source: ModelSource, config: EngineConfig):
    """The one-rank reference: the same source loaded in this process, a plain Engine."""
    loaded, _ = source.load("cpu")
    return loaded, Engine(loaded, config)
