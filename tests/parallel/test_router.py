"""The prefix-aware router (SGLang-style) and data-parallel replicas with failover.

Oracles: for routing, the prompts themselves (which prefix each carries) and the round-robin
baseline measured on the same requests; for outputs, a one-process Engine's greedy ids. What
you should see:
- the policy alone: prompts that share a prefix go where that prefix went; 4 prefixes in random
  order over 2 replicas split so that neither gets over 65% of 400 requests;
- real replicas (2 processes, tiny float32 model, a pool that holds about two prefixes'
  blocks): the replicas' own prefix-cache hit rate is higher behind the router than behind
  round-robin (both measured here, printed), and neither replica gets over 65%;
- a replica killed mid-run: its unfinished requests are re-sent and every request finishes,
  with the ids one engine gives.
"""
from __future__ import annotations

import random

import pytest

from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.parallel.dp_replicas import DataParallelEngines
from llm_playground.model.parallel.router import PrefixRouter, RoundRobin, RouterConfig

from tp_helpers import one_rank, tiny_source


def _workload(n_prefixes=4, n=40, prefix_len=48, tail=4, seed=0):
    rnd = random.Random(seed)
    prefixes = [[rnd.randrange(256) for _ in range(prefix_len)] for _ in range(n_prefixes)]
    kinds = [rnd.randrange(n_prefixes) for _ in range(n)]
    return kinds, [prefixes[k] + [rnd.randrange(256) for _ in range(tail)] for k in kinds]


def test_shared_prefixes_land_on_the_same_replica():
    router = PrefixRouter(3, RouterConfig(chunk=4))
    kinds, reqs = _workload(n_prefixes=3, n=60)
    where: dict[int, set] = {}
    for k, ids in zip(kinds, reqs):
        where.setdefault(k, set()).add(router.route(ids, [0, 0, 0], [True] * 3))
    assert all(len(v) == 1 for v in where.values()), where
    assert len(set().union(*where.values())) == 3            # and they spread over the three


def test_four_prefixes_over_two_replicas_are_balanced():
    kinds, reqs = _workload(n=400, seed=5)
    for policy in (PrefixRouter(2, RouterConfig(chunk=4)), RoundRobin(2)):
        loads, counts, window = [0, 0], [0, 0], []
        for ids in reqs:
            i = policy.route(ids, loads, [True, True])
            counts[i] += 1
            loads[i] += 1
            window.append(i)
            if len(window) > 6:                              # six requests in flight at a time
                loads[window.pop(0)] -= 1
        assert max(counts) / sum(counts) <= 0.65, (policy.name, counts)


def test_a_dead_replica_is_skipped_and_forgotten():
    router = PrefixRouter(2, RouterConfig(chunk=4))
    ids = list(range(32))
    first = router.route(ids, [0, 0], [True, True])
    router.forget(first)
    alive = [i != first for i in range(2)]
    assert router.route(ids, [0, 0], alive) == 1 - first
    with pytest.raises(RuntimeError, match="no data-parallel replica is alive"):
        router.route(ids, [0, 0], [False, False])


def _serve(policy, reqs, waves=4):
    dp = DataParallelEngines(tiny_source(4, 2), 2, EngineConfig(num_blocks=40, block_size=4,
                                                                device="cpu"), policy=policy)
    try:
        for w in range(0, len(reqs), waves):
            for ids in reqs[w:w + waves]:
                dp.submit(ids, SamplingParams(max_tokens=2))
            dp.wait(120)
        return dp.hit_rate(), [r.routed for r in dp.report().replicas]
    finally:
        dp.close()


@pytest.mark.slow
def test_router_beats_round_robin_on_real_replicas():
    _, reqs = _workload(n=40)
    hit_prefix, routed_prefix = _serve("prefix", reqs)
    hit_rr, routed_rr = _serve("round_robin", reqs)
    print(f"prefix hit rate {hit_prefix:.3f} routed {routed_prefix}; "
          f"round-robin {hit_rr:.3f} routed {routed_rr}")
    assert hit_prefix > hit_rr
    assert max(routed_prefix) / sum(routed_prefix) <= 0.65


def test_no_request_lost_when_a_replica_stops():
    source = tiny_source(4, 2)
    config = EngineConfig(num_blocks=96, block_size=4, device="cpu", max_num_seqs=4)
    _, reqs = _workload(n=10, prefix_len=8, seed=2)
    params = SamplingParams(max_tokens=24, temperature=0.0)
    _, ref = one_rank(source, config)
    want = [ref.generate(ids, params) for ids in reqs]
    dp = DataParallelEngines(source, 2, config, policy="round_robin")
    try:
        rids = [dp.submit(ids, params) for ids in reqs]
        victim = 1
        while not dp.finished:                   # kill once the run is under way
            dp.poll(0.2)
        assert dp.replicas[victim].running, "the victim had nothing left to lose"
        dp.stop_replica(victim)
        dp.wait(120)
        got = {f.request_id: f for f in dp.finished}
        assert sorted(got) == sorted(rids)
        assert dp.resent > 0 and any(f.attempts == 2 for f in got.values())
        assert all(f.replica == 1 - victim for f in got.values() if f.attempts == 2)
        assert [got[r].token_ids for r in rids] == want
        assert [r.alive for r in dp.report().replicas] == [True, False]
        from llm_playground.playground.kv_view import parallel_text     # the KV tab's lines
        text = parallel_text(dp.report())
        assert "data parallel over 2 replicas" in text and "replica 1: stopped" in text
        routed0 = dp.report().replicas[0].routed
        assert f"replica 0: up" in text and f"· {routed0} routed" in text
    finally:
        dp.close()
