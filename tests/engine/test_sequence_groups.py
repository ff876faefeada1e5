"""The engine's public sequence-group interface (model/engine/sequence_group.py) is usable from
outside: a group written here, registered through `add_request(..., group=...)`, runs beside a
plain request and finishes with no leaked block; and the engine's step has no beam-specific code
path (plain sampling and beam search are both just groups)."""
from __future__ import annotations

import inspect

from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.model.engine.reports import SHARED, RequestOutput
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.sequence_group import SequenceGroup
from llm_playground.model.engine.step_plan import LogitsRequest
from engine_helpers import engine, prompts

M = 6


class BestOfTwo(SequenceGroup):
    """Fork the prompt into its best and second-best first tokens, continue both greedily (top-1
    log-probability rows), and report the one with the higher total logprob."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.paths: dict[int, list] = {}          # seq id -> [sequence, total logprob]
        self.parked: list = []
        self.chosen = None

    def logits_request(self, seq):
        return LogitsRequest(top_logprobs=1 if self.paths else 2)

    def take_row(self, seq, tokens, top):
        ids, lps = top
        assert tokens == []                      # no draws were asked for
        if not self.paths:
            child = self.ops.fork(seq, 1)
            for s, j in ((seq, 0), (child, 1)):
                self.paths[s.seq_id] = [s, float(lps[j])]
                self.ops.append_token(s, int(ids[j]))
        else:
            self.paths[seq.seq_id][1] += float(lps[0])
            self.ops.append_token(seq, int(ids[0]))
        if len(seq.output_ids) >= self.max_tokens and self.ops.park(seq):
            self.parked.append(seq)              # done: wait for the other path, blocks kept
        return []                                # the group appends its own tokens

    def end_rows(self):
        paths = list(self.paths.values())
        if len(self.parked) < len(paths):
            return
        best, lp = max(paths, key=lambda p: p[1])
        self.chosen = (list(best.output_ids), lp)
        self.ops.finish_request([RequestOutput(
            request_id=self.request.request_id, new_token_ids=list(best.output_ids),
            text_delta=self.ops.decode(best.output_ids), finished=True,
            finish_reason=FinishReason.MAX_TOKENS)])


def greedy(prompt, n):
    return engine(num_blocks=200).generate(prompt, SamplingParams(max_tokens=n, ignore_eos=True))


def test_custom_group_runs_beside_a_plain_request_and_leaks_no_block():
    p, other_p = prompts(2, 9, 14, seed=4)
    e = engine(num_blocks=64)
    group = BestOfTwo(M)
    rid = e.add_request(p, SamplingParams(max_tokens=M, ignore_eos=True), group=group)
    other = e.add_request(other_p, SamplingParams(max_tokens=M + 2, ignore_eos=True))
    outs: dict = {}
    shared = False
    while e.has_unfinished():
        report = e.step()
        shared |= any(b.state == SHARED and b.ref_count > 1 for b in report.cache.blocks)
        for o in report.outputs:
            outs.setdefault(o.request_id, []).append(o)
        e.bm.check_invariants()
    assert shared                                # the fork shared the prompt's blocks
    (out,) = outs[rid]
    assert out.finished and out.finish_reason is FinishReason.MAX_TOKENS
    assert (out.new_token_ids, group.chosen[1]) == group.chosen
    paths = sorted(group.paths.values(), key=lambda v: v[0].sample_index)
    first, second = (list(s.output_ids) for s, _ in paths)
    assert first == greedy(p, M)                 # path 0: plain greedy
    assert second[0] != first[0] and second[1:] == greedy(p + second[:1], M - 1)
    assert out.new_token_ids == max(paths, key=lambda v: v[1])[0].output_ids
    assert [t for o in outs[other] for t in o.new_token_ids] == greedy(other_p, M + 2)
    c = e.cache_report()
    assert c.num_used == c.num_shared == 0 and c.num_free + c.num_cached == e.bm.num_blocks
    assert not e.requests and not e.groups and not e.has_unfinished()


def test_engine_step_has_no_beam_specific_code_path():
    for name in ("step", "_plan", "_apply", "add_request", "abort", "_finish_sequence"):
        src = inspect.getsource(getattr(Engine, name)).lower()
        assert "beam" not in src, name
    for gone in ("fork_sequence", "finish_sequence", "release", "emit", "beam_groups", "stream"):
        assert not hasattr(Engine, gone), gone
    assert not hasattr(engine(), "beam_groups")
