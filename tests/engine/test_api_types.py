"""API types: SamplingParams / BeamSearchParams refuse values of the wrong type (1.5 tokens, True
samples, "0.5" degrees) with a ValueError naming the field, and take numpy integers as integers;
`add_request` takes numpy ids as the ids they are (oracle: the same request with Python ints) and
finishes a request whose ids are bools, strings or no sequence at all with a typed error."""
from __future__ import annotations

import numpy as np
import pytest

from engine_helpers import engine, run_all
from llm_playground.model.engine.beam_search import BeamSearchParams
from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams

BAD_SAMPLING = [
    ("max_tokens", 1.5), ("max_tokens", True), ("max_tokens", "16"), ("n", True), ("n", 2.0),
    ("top_k", 2.5), ("seed", 1.5), ("seed", False), ("temperature", "0.5"), ("temperature", True),
    ("top_p", None), ("repetition_penalty", "1.1"), ("ignore_eos", 1), ("stop_token_ids", 5),
    ("stop_token_ids", (1.5,)), ("stop_token_ids", (True,)), ("stop", 5),
]


@pytest.mark.parametrize("field,value", BAD_SAMPLING)
def test_sampling_params_refuse_wrong_types(field, value):
    with pytest.raises(ValueError, match=field.split("_entry")[0]) as info:
        SamplingParams(**{field: value})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("field,value", [("beam_width", 2.5), ("beam_width", True),
                                         ("max_tokens", 3.0), ("length_penalty", "1"),
                                         ("length_penalty", float("nan")), ("ignore_eos", "no"),
                                         ("stop_token_ids", (2.5,))])
def test_beam_params_refuse_wrong_types(field, value):
    with pytest.raises(ValueError, match=field):
        BeamSearchParams(**{field: value})


def test_numpy_values_are_the_numbers_they_hold():
    p = SamplingParams(max_tokens=np.int32(7), top_k=np.int64(3), seed=np.uint64(5), n=np.int8(2),
                       temperature=np.float32(0.5), top_p=np.float64(0.9), stop_token_ids=np.array([4, 5]))
    want = SamplingParams(max_tokens=7, top_k=3, seed=5, n=2, temperature=0.5, top_p=0.9,
                          stop_token_ids=(4, 5))
    assert p == want and all(type(getattr(p, f)) is int for f in ("max_tokens", "top_k", "seed", "n"))
    assert type(p.temperature) is float and all(type(t) is int for t in p.stop_token_ids)
    assert SamplingParams(stop="###").stop == ("###",)       # one stop string, not three "#"


GREEDY = SamplingParams(max_tokens=6, ignore_eos=True)


@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint16])
def test_numpy_prompt_ids_run_like_python_ints(kind):
    prompt = [3, 17, 99, 250, 1, 42]
    want = engine().generate(prompt, GREEDY)
    e = engine()
    assert e.generate(np.array(prompt, dtype=kind), GREEDY) == want
    e = engine()
    assert e.generate([kind(t) for t in prompt], GREEDY) == want


@pytest.mark.parametrize("prompt,says", [
    ([True, 5, 6], "True is not an integer"),
    ([5, 6.0], "6.0 is not an integer"),
    ([5, "6"], "'6' is not an integer"),
    ("hello", "must be a list of token ids, got str"),
    (b"\x05\x06", "must be a list of token ids, got bytes"),
    (7, "must be a list of token ids, got int"),
    (None, "must be a list of token ids, got NoneType"),
])
def test_bad_prompt_ids_finish_with_a_typed_error(prompt, says):
    e = engine()
    rid = e.add_request(prompt, GREEDY)
    good = e.add_request([1, 2, 3], GREEDY)
    ids, reports = run_all(e)
    outs = [o for r in reports for o in r.outputs if o.request_id == rid]
    assert len(outs) == 1 and outs[0].finish_reason is FinishReason.ERROR
    assert outs[0].error_kind is ErrorKind.INVALID_REQUEST and says in outs[0].error
    assert not outs[0].new_token_ids and len(ids[(good, 0)]) == 6
    assert e.bm.num_owned == 0


@pytest.mark.parametrize("rid", [1.5, True, ["a"], None.__class__])
def test_bad_request_ids_are_refused(rid):
    e = engine()
    with pytest.raises(ValueError, match="request_id must be an int or a str"):
        e.add_request([1, 2], GREEDY, request_id=rid)
    assert not e.has_unfinished()


@pytest.mark.parametrize("field,value", [("block_size", 1.5), ("block_size", True), ("num_blocks", "64"),
                                         ("max_model_len", 2.0), ("max_num_seqs", None),
                                         ("gpu_memory_utilization", "0.5"), ("cuda_graphs", 1),
                                         ("enable_prefix_caching", "yes"), ("attention", 3), ("device", 0)])
def test_engine_config_refuses_wrong_types(field, value):
    from llm_playground.model.engine.config import EngineConfig
    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: value})


def test_engine_config_takes_numpy_integers():
    from llm_playground.model.engine.config import EngineConfig
    cfg = EngineConfig(block_size=np.int64(8), num_blocks=np.int32(32))
    assert cfg == EngineConfig(block_size=8, num_blocks=32) and type(cfg.block_size) is int
