"""Oracle: beam search on the paged engine equals transformers' `generate(num_beams=k,
do_sample=False, early_stopping=..., length_penalty=...)` on the same tiny random float32 Llama:
the k hypotheses' token ids in the same order, and their scores. While it runs, beams share KV
blocks (reports show SHARED blocks with ref count > 1) and copy-on-write happens; at the end no
block leaks. Width 1 equals transformers' greedy search.

The EOS id is picked from the oracle's own output (a token the model actually produces early),
so that hypotheses really end by EOS and compete with longer live beams."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from llm_playground.model.weights import hf_folder
from llm_playground.model.engine.beam_search import BeamSearchParams
from llm_playground.model.engine.engine import Engine, RequestError
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.weights.loader import LoadedModel, build_model
from llm_playground.model.engine.reports import SHARED
from llm_playground.model.engine.sampling_params import SamplingParams
sys.path.insert(0, str(Path(__file__).parents[1] / "model"))   # tests/model/tiny_models.py
from tiny_models import random_hf_model  # noqa: E402

import transformers

MAX_NEW = 10
PROMPT_GEN = torch.Generator().manual_seed(5)
PROMPTS = [torch.randint(3, 97, (n,), generator=PROMPT_GEN).tolist() for n in (5, 11, 16)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    hf = random_hf_model(3)
    path = tmp_path_factory.mktemp("beam-model")
    hf.save_pretrained(path)
    cfg = hf_folder.read_hf_config(path)
    _, get = hf_folder.open_hf_weights(path, cfg)
    ours = build_model(cfg, get, "float32", torch.float32, torch.device("cpu"))
    return hf, ours, cfg


def make_engine(models, eos: int, num_blocks: int = 96, block_size: int = 4, **cfg) -> Engine:
    _, ours, mcfg = models
    loaded = LoadedModel(model=ours, config=dataclasses.replace(mcfg, eos_token_ids=(eos,)),
                         tokenizer=None, chat_template=None, name="tiny-hf", path=None,
                         dtype=torch.float32, device=torch.device("cpu"), weight_format="float32")
    return Engine(loaded, EngineConfig(num_blocks=num_blocks, block_size=block_size, **cfg))


@torch.no_grad()
def hf_beams(hf, prompt, k, eos, length_penalty=1.0, early_stopping=True, max_new=MAX_NEW):
    """[(generated ids, score)] best first; ids cut after the first EOS (HF pads with eos[0]).
    eos: one id or a list of ids."""
    eos = [eos] if isinstance(eos, int) else list(eos)
    out = hf.generate(torch.tensor([prompt]), num_beams=k, do_sample=False, num_return_sequences=k,
                      length_penalty=length_penalty, early_stopping=early_stopping,
                      max_new_tokens=max_new, eos_token_id=eos, pad_token_id=eos[0],
                      output_scores=True, return_dict_in_generate=True)
    res = []
    for i, row in enumerate(out.sequences):
        ids = row[len(prompt):].tolist()
        ends = [j for j, t in enumerate(ids) if t in eos]
        if ends:
            ids = ids[:ends[0] + 1]
        res.append((ids, float(out.sequences_scores[i]) if k > 1 else None))
    return res


def pick_eos(hf, prompt, position: int = 3) -> int:
    """A token the model really emits for this prompt: the first token of transformers' greedy
    continuation from `position` on that did not come earlier (so hypotheses end by it)."""
    ids = hf_beams(hf, prompt, 1, eos=0, max_new=position + 4)[0][0]
    return next(t for i, t in enumerate(ids) if i >= position and t not in ids[:i])


def check_no_leak(e: Engine):
    e.bm.check_invariants()
    c = e.cache_report()
    assert c.num_used == c.num_shared == 0 and c.num_free + c.num_cached == e.bm.num_blocks
    assert not e.requests and not e.groups and not e.has_unfinished()


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("prompt_index", range(len(PROMPTS)))
def test_beams_equal_transformers(models, width, prompt_index):
    hf = models[0]
    prompt = PROMPTS[prompt_index]
    eos = pick_eos(hf, prompt, position=2 + prompt_index)
    want = hf_beams(hf, prompt, width, eos)
    e = make_engine(models, eos)
    reports = []
    got = e.beam_search(prompt, BeamSearchParams(beam_width=width, max_tokens=MAX_NEW),
                        on_report=reports.append)
    assert [h.token_ids for h in got] == [ids for ids, _ in want]
    if width > 1:
        for h, (_, score) in zip(got, want):
            assert h.score == pytest.approx(score, abs=1e-4)
            assert h.score == pytest.approx(h.cumulative_logprob / len(h.token_ids), rel=1e-6)
        shared = [b for r in reports for b in r.cache.blocks if b.state == SHARED]
        assert shared and max(b.ref_count for b in shared) > 1
        assert e.bm.cow_copies > 0
    else:
        assert e.bm.cow_copies == 0 and all(r.cache.num_shared == 0 for r in reports)
    check_no_leak(e)


@pytest.mark.parametrize("length_penalty,early_stopping", [(0.0, True), (2.0, True), (-0.5, True),
                                                           (1.0, False), (2.0, False)])
def test_length_penalty_and_early_stopping_rules_equal_transformers(models, length_penalty, early_stopping):
    hf = models[0]
    for i, prompt in enumerate(PROMPTS[:2]):
        eos = pick_eos(hf, prompt, position=3 + i)
        want = hf_beams(hf, prompt, 3, eos, length_penalty, early_stopping)
        e = make_engine(models, eos)
        got = e.beam_search(prompt, BeamSearchParams(beam_width=3, max_tokens=MAX_NEW,
                                                     length_penalty=length_penalty,
                                                     early_stopping=early_stopping))
        assert [h.token_ids for h in got] == [ids for ids, _ in want], (i, length_penalty)
        assert [h.score for h in got] == pytest.approx([s for _, s in want], abs=1e-4)
        check_no_leak(e)


# (prompt index, positions in its greedy continuation of the two ending ids): cases where HF's
# early_stopping=True and False choose different hypotheses (asserted below, so the cases keep
# telling the two rules apart).
TWO_EOS_CASES = [(0, 2, 3), (1, 1, 5), (2, 1, 4)]


@pytest.mark.parametrize("prompt_index,a,b", TWO_EOS_CASES)
def test_two_ending_ids_and_both_stopping_rules_equal_transformers(models, prompt_index, a, b):
    """The model's EOS plus a stop id: HF then keeps 3k candidates per step (1 + #eos) and
    hypotheses end often, so the k-finished rule and the heuristic rule really differ."""
    hf = models[0]
    prompt = PROMPTS[prompt_index]
    greedy = hf_beams(hf, prompt, 1, eos=0)[0][0]
    eos, stop = greedy[a], greedy[b]
    assert eos != stop
    differ = False
    for k in (2, 3):
        for lp in (1.0, 2.0):
            got_by_rule = {}
            for early in (True, False):
                want = hf_beams(hf, prompt, k, [eos, stop], lp, early)
                e = make_engine(models, eos)
                got = e.beam_search(prompt, BeamSearchParams(beam_width=k, max_tokens=MAX_NEW,
                                                             length_penalty=lp, early_stopping=early,
                                                             stop_token_ids=(stop,)))
                assert [h.token_ids for h in got] == [ids for ids, _ in want], (k, lp, early)
                assert [h.score for h in got] == pytest.approx([sc for _, sc in want], abs=1e-4)
                check_no_leak(e)
                got_by_rule[early] = [h.token_ids for h in got]
            differ |= got_by_rule[True] != got_by_rule[False]
    assert differ, "this case no longer tells early_stopping=True from False apart"


@pytest.mark.parametrize("num_blocks", [40, 10])
def test_beams_batched_with_other_requests_and_tight_budget(models, num_blocks):
    """Beam search beside a sampled request, with a token budget smaller than the beams (so
    some beams wait a step: the others are parked) and, at 10 blocks, a cache so small that
    beams are preempted and recomputed: same hypotheses."""
    hf = models[0]
    eos = pick_eos(hf, PROMPTS[1], position=4)
    want = hf_beams(hf, PROMPTS[1], 4, eos)
    e = make_engine(models, eos, num_blocks=num_blocks, max_num_batched_tokens=3)
    other = e.add_request(PROMPTS[2], SamplingParams(max_tokens=8, ignore_eos=True))
    rid = e.add_beam_request(PROMPTS[1], BeamSearchParams(beam_width=4, max_tokens=MAX_NEW))
    outs: dict[int, list] = {}
    while e.has_unfinished():
        for o in e.step().outputs:
            outs.setdefault(o.request_id, []).append(o)
        e.bm.check_invariants()
    beams = sorted(outs[rid], key=lambda o: o.sample_index)
    assert [o.new_token_ids for o in beams] == [ids for ids, _ in want]
    assert all(o.finished for o in beams)
    assert sum(len(o.new_token_ids) for o in outs[other]) == 8
    assert (e.scheduler.num_preemptions > 0) == (num_blocks == 10)
    check_no_leak(e)


def test_bad_requests_give_clear_errors(models):
    e = make_engine(models, eos=2)
    with pytest.raises(RequestError, match="empty prompt"):
        e.beam_search([], BeamSearchParams(beam_width=2))
    with pytest.raises(RequestError, match="vocabulary"):
        e.beam_search([5, 6], BeamSearchParams(beam_width=60))
    with pytest.raises(RequestError, match="sliding"):
        e.beam_search([5, 6], BeamSearchParams(beam_width=2), pattern="streaming:4,8")
    with pytest.raises(ValueError, match="beam_width"):
        BeamSearchParams(beam_width=0)
    check_no_leak(e)


def test_abort_frees_every_beam(models):
    e = make_engine(models, eos=2)
    rid = e.add_beam_request(PROMPTS[2], BeamSearchParams(beam_width=4, max_tokens=MAX_NEW,
                                                          ignore_eos=True))
    for _ in range(4):
        e.step()
    assert e.cache_report().num_shared > 0
    e.abort(rid)
    while e.has_unfinished():
        e.step()
    check_no_leak(e)
