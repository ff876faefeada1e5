"""The engine's host-side fast paths (numpy mirror of the block tables in model/engine/table_rows.py,
the scheduler's fast path for decodes into an owned block, build_batch's one-token path, the
`gone` set of sequences preempted in the middle of a step) checked against expectations that do
not go through them:
- every batch the engine builds is rebuilt here from the Python block tables and the token
  lists with the plain formulas (ids, RoPE positions with the sliding offset, slots, context
  lengths, -1-padded tables, logits rows) and compared with the plan and with the batch the
  runner derives on the device from its persistent tables (model/engine/device_batch.py, kept
  current by the changed rows alone), and every scheduled write must land in blocks that
  the sequence owns alone (copy-on-write done) and that no preempted sequence is scheduled;
- greedy tokens under tight pools (preemption by recompute in the middle of a step, tiny
  chunks that leave exactly one prompt token, one-token prompts, prefix-cache hits, forks with
  copy-on-write, beams forked and dropped, holes of a local window) equal a plain greedy loop
  that recomputes the whole sequence under the same mask, with no engine at all;
- seeded parallel samples and beam search under a tight pool equal the same requests run alone
  in a pool too large to preempt.
"""
from __future__ import annotations

import dataclasses

import pytest

import llm_playground.model.engine.engine as engine_module
from llm_playground.model.engine import eviction
from llm_playground.model.engine.beam_search import BeamSearchParams
from llm_playground.model.engine.reports import BlockInfo, RequestOutput, SequenceReport
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.sequence import SeqStatus
from engine_helpers import engine, prompts, reference_greedy, run_all

MAX_NEW = 10
BS = 4


class CheckedBuild:
    """Wraps the engine's plan_batch: checks each batch plan against one rebuilt from the Python
    tables, the scheduled writes against the ref counts, and counts the paths taken. It also
    wraps the runner's persistent device batch: the AttentionBatch it derives on the device
    (positions, slots, context lengths, -1-padded tables from its own copy of the block tables,
    updated by changed rows only) must equal the one rebuilt here from the Python lists."""

    def __init__(self, monkeypatch, e) -> None:
        self.e = e
        self.real = engine_module.plan_batch
        self.batches = self.one_token_prompt_items = self.holes = 0
        self.decodes = self.one_token_tail_chunks = self.deferred = self.built = 0
        self.expected: dict[int, tuple] = {}          # id(plan) -> what the device must derive
        monkeypatch.setattr(engine_module, "plan_batch", self)
        real_build = e.runner.batch.build

        def build(plan, prev_ids=None):
            batch, input_ids = real_build(plan, prev_ids)
            pos, slots, ctx, tables = self.expected.pop(id(plan))
            assert batch.positions.tolist() == pos
            assert batch.slot_mapping.tolist() == slots
            assert batch.context_lens.tolist() == ctx
            assert batch.block_tables.tolist() == tables
            assert batch.cu_seqlens_q.tolist() == plan.cu_seqlens_q.tolist()
            assert batch.logits_indices.tolist() == plan.logits_rows.tolist()
            self.built += 1
            return batch, input_ids

        monkeypatch.setattr(e.runner.batch, "build", build)

    def __call__(self, items, spec, bm, logits):
        bm.check_invariants()                          # includes the numpy mirror of the tables
        batch = self.real(items, spec, bm, logits)
        input_ids = batch.input_ids
        self.batches += 1
        seen = set()
        ids, pos, slots, cu, ctx, rows, tables = [], [], [], [0], [], [], []
        deferred, deferred_draws, starts, offsets, seq_rows = [], [], [], [], []
        bs = bm.block_size
        for it in items:
            seq = it.seq
            assert seq.seq_id not in seen, "a sequence scheduled twice in one step"
            seen.add(seq.seq_id)
            assert seq.status is SeqStatus.RUNNING and bm.has(seq.seq_id), \
                f"seq {seq.seq_id} scheduled while {seq.status.value} (preempted this step?)"
            table = list(bm.table(seq.seq_id))
            for i in range(it.start // bs, (it.end - 1) // bs + 1):
                assert table[i] >= 0 and bm.ref_count(table[i]) == 1, \
                    f"seq {seq.seq_id} writes block {table[i]} it does not own alone"
            offset = eviction.rope_offset(table, it.start, bs) if seq.pattern.evicts else 0
            known = seq.all_ids[it.start:it.end]
            if it.end > seq.num_tokens:          # overlap: its id is still on the device
                assert it.end - it.start == 1 and seq.num_pending == 1 and not known
                deferred.append(len(ids))
                deferred_draws.append(seq.pending_draw)
                self.deferred += 1
                known = [0]
            ids += known
            starts.append(it.start)
            offsets.append(offset)
            seq_rows.append(bm.table_row(seq.seq_id))
            pos += [p - offset for p in range(it.start, it.end)]
            slots += [table[p // bs] * bs + p % bs for p in range(it.start, it.end)]
            cu.append(cu[-1] + it.end - it.start)
            ctx.append(it.end)
            if it.end == seq.num_tokens_ahead:
                rows.append(cu[-1] - 1)
            tables.append(table)
            self.holes += -1 in table
            if it.num_tokens == 1:
                if it.is_decode:
                    self.decodes += 1
                elif len(seq.prompt_ids) == 1:
                    self.one_token_prompt_items += 1
                elif it.start > 0 and not seq.output_ids:
                    self.one_token_tail_chunks += 1
        width = max(len(t) for t in tables)
        assert input_ids.tolist() == ids
        assert batch.starts.tolist() == starts and batch.rope_offsets.tolist() == offsets
        assert batch.has_offsets == any(offsets)
        assert len(set(seq_rows)) == len(seq_rows) and batch.seq_rows.tolist() == seq_rows
        assert batch.table_width == width
        assert batch.cu_seqlens_q.tolist() == cu and batch.num_rows == len(items)
        assert batch.context_lens.tolist() == ctx
        self.expected[id(batch)] = (pos, slots, ctx, [t + [-1] * (width - len(t)) for t in tables])
        assert batch.logits_rows.tolist() == rows
        assert batch.deferred_tokens.tolist() == deferred
        assert batch.deferred_draws.tolist() == deferred_draws
        assert len(batch.logits) == len(rows)
        return batch


PROMPTS = prompts(8, 2, 20, seed=3)
SHARED = PROMPTS[6][:8]                                # two full blocks: a prefix-cache hit
WORK = [PROMPTS[0][:1], PROMPTS[1][:1], PROMPTS[2][:BS], PROMPTS[3][:BS + 1], PROMPTS[4][:6],
        PROMPTS[5], SHARED + PROMPTS[0][:3], SHARED + PROMPTS[1][:7], PROMPTS[7]]
PATTERNS = ["dense", "atrous:2", "sparse:8,2", "local:12"]
GREEDY = SamplingParams(max_tokens=MAX_NEW, ignore_eos=True)
# Sliding patterns (local) cannot fork; n=2 runs on the non-evicting ones.
JOBS = [(p, pat, 2 if i % 3 == 0 and pat != "local:12" else 1)
        for i, p in enumerate(WORK) for pat in PATTERNS]


@pytest.fixture(scope="module")
def expected():
    want = {(tuple(p), pat): reference_greedy(p, MAX_NEW, pattern=pat) for p, pat, _ in JOBS}
    want.update({(tuple(SHARED + [1]), pat): reference_greedy(SHARED + [1], MAX_NEW, pattern=pat)
                 for pat in PATTERNS[:3]})
    return want


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
@pytest.mark.parametrize("num_blocks,budget", [(400, 4096), (14, 5), (10, 3)])
def test_tight_pools_equal_a_full_recompute_loop(monkeypatch, expected, num_blocks, budget,
                                                 overlap):
    e = engine(num_blocks=num_blocks, block_size=BS, max_num_batched_tokens=budget, max_num_seqs=8,
               overlap=overlap)
    check = CheckedBuild(monkeypatch, e)
    for pat in PATTERNS[:3]:                           # the shared prefix, cached per pattern
        assert e.generate(SHARED + [1], GREEDY, pattern=pat) == expected[(tuple(SHARED + [1]), pat)]
    rids = [e.add_request(p, dataclasses.replace(GREEDY, n=n), pattern=pat) for p, pat, n in JOBS]
    streaming_rid = e.add_request(PROMPTS[5], GREEDY, pattern="streaming:2,8")  # holes + rerotation
    got, reports = run_all(e)
    for (p, pat, n), rid in zip(JOBS, rids):
        for i in range(n):
            assert got[(rid, i)] == expected[(tuple(p), pat)], (p, pat, i, num_blocks, budget)
    assert len(got[(streaming_rid, 0)]) == MAX_NEW
    assert all(r.num_prefill_tokens + r.num_decode_tokens <= budget for r in reports)
    e.bm.check_invariants()
    assert e.bm.num_owned == 0 and e.bm.seq_tables.num_mirror_rows == 0
    assert check.decodes and check.one_token_prompt_items and check.holes
    assert check.built == check.batches and not check.expected
    assert (check.deferred > 0) == overlap             # decodes of ids still on the device
    assert e.bm.cow_copies > 0 and e.bm.prefix_hits > 0
    if num_blocks < 100:
        assert reports[-1].cache.preemptions > 0
        assert check.one_token_tail_chunks > 0          # a chunk that leaves exactly one token


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
def test_samples_and_beams_in_a_tight_pool_equal_them_alone(monkeypatch, overlap):
    sampled = SamplingParams(temperature=1.0, top_k=20, max_tokens=MAX_NEW, ignore_eos=True,
                             seed=11, n=3)
    beam = BeamSearchParams(beam_width=3, max_tokens=6, ignore_eos=True)
    # alone, in a pool too large to preempt
    alone = {}
    for j, p in enumerate(PROMPTS[:3]):
        for i in range(3):
            lone = dataclasses.replace(sampled, seed=11 + j * 10 + i, n=1)
            alone[(j, i)] = engine(num_blocks=400, block_size=BS).generate(p, lone)
    want_beams = [h.token_ids for h in engine(num_blocks=400, block_size=BS).beam_search(
        PROMPTS[3], beam)]
    # together, in a pool that preempts
    e = engine(num_blocks=10, block_size=BS, max_num_batched_tokens=4, max_num_seqs=8,
               overlap=overlap)
    check = CheckedBuild(monkeypatch, e)
    rids = [e.add_request(p, dataclasses.replace(sampled, seed=11 + j * 10))
            for j, p in enumerate(PROMPTS[:3])]
    brid = e.add_beam_request(PROMPTS[3], beam)
    got, reports = run_all(e)
    for j, rid in enumerate(rids):
        for i in range(3):
            assert got[(rid, i)] == alone[(j, i)], (j, i)
    assert [got[(brid, r)] for r in range(len(want_beams))] == want_beams
    assert reports[-1].cache.preemptions > 0 and e.bm.cow_copies > 0 and check.decodes
    assert (check.deferred > 0) == overlap
    e.bm.check_invariants()
    assert e.bm.num_owned == 0 and e.bm.seq_tables.num_mirror_rows == 0


def test_report_records_stay_plain_dataclasses():
    """Slotted report records still take field assignment, replace() and asdict()."""
    out = RequestOutput(1, [2, 3], "x", False)
    out.finished = True
    assert dataclasses.replace(out, text_delta="y").text_delta == "y"
    assert dataclasses.asdict(out)["new_token_ids"] == [2, 3]
    rep = SequenceReport(0, 1, "running", 3, 1, 0, [4, -1], 4)
    assert dataclasses.replace(rep, kv_tokens=0) == SequenceReport(0, 1, "running", 3, 1, 0,
                                                                     [4, -1], 0)
    info = BlockInfo(5, "used", 1, [0], 2)
    info.num_tokens = 3
    assert dataclasses.asdict(info) == {"block_id": 5, "state": "used", "ref_count": 1,
                                        "owners": [0], "num_tokens": 3}


@pytest.mark.parametrize("seed", [22, 28, 31])
def test_parked_beams_never_stall_the_engine(seed):
    """Workloads (found by the review's random search) where a beam search's parked beams held
    the blocks its preempted sibling needed while nothing else ran: the engine used to loop
    forever. Now the parked beams are preempted once; if the beams still cannot all fit, the beam
    request ends with an error naming the blocks it needs, and every other request finishes."""
    import random
    rng = random.Random(seed)
    e = engine(num_blocks=rng.randint(6, 16), block_size=4,
               max_num_batched_tokens=rng.choice([4, 8, 16, 64]))
    ps = prompts(4, 2, 12, seed)
    lengths = {}
    for p in ps[:2]:
        n = rng.randint(2, 10)
        lengths[e.add_request(p, SamplingParams(max_tokens=n, ignore_eos=True))] = n
    params = BeamSearchParams(beam_width=rng.randint(2, 3), max_tokens=rng.randint(3, 8),
                              ignore_eos=True)
    brid = e.add_beam_request(ps[2], params)
    lengths[e.add_request(ps[3], SamplingParams(max_tokens=5, ignore_eos=True))] = 5
    got: dict[int, list[int]] = {}
    beam_out, beam_error = {}, None
    for _ in range(2000):
        if not e.has_unfinished():
            break
        for o in e.step().outputs:
            if o.request_id == brid:
                beam_error = beam_error or o.error
                if not o.error:
                    beam_out[o.sample_index] = o.new_token_ids
            else:
                got.setdefault(o.request_id, []).extend(o.new_token_ids)
    assert not e.has_unfinished(), "engine stalled"
    e.bm.check_invariants()
    assert {rid: len(ids) for rid, ids in got.items()} == lengths
    if beam_error is not None:
        assert "beam search of width" in beam_error and "KV blocks" in beam_error
    else:
        alone = engine(num_blocks=400, block_size=4).beam_search(ps[2], params)
        assert [beam_out[i] for i in range(len(alone))] == [h.token_ids for h in alone]
