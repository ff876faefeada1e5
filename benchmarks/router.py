"""The prefix-aware router against round-robin: prefix-cache hit rate and balance.

Workload: P shared prefixes (--prefix-len tokens each) in random order, each request the
prefix plus a few unique tokens, 2 output tokens, sent in waves of --wave requests (each wave
waits for the last). Two measurements, both policies on the same requests, in one run:
- replicas: N real engine processes (model/parallel/dp_replicas.py) on a tiny random model
  with a pool of --blocks blocks each (about two prefixes' worth, so a replica that sees every
  prefix thrashes its cache); hit rate = prompt tokens the replicas' own prefix caches served
  over tokens looked up (their CacheReport counters), balance = the busiest replica's share;
- policy only: the same policies over many more requests without engines (router.py), the
  router's matched share of prompt tokens and the balance, with six requests in flight.

  python benchmarks/router.py                        # 2 replicas, 4 prefixes, 40 requests
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402

TINY = dict(vocab_size=261, hidden_size=48, intermediate_size=72, num_layers=2, num_heads=4,
            num_kv_heads=2, head_dim=8, max_position=512)


def workload(prefixes: int, n: int, prefix_len: int, tail: int, seed: int) -> list[list[int]]:
    """n prompts: a random one of `prefixes` shared prefixes, then `tail` unique tokens."""
    rnd = random.Random(seed)
    pre = [[rnd.randrange(256) for _ in range(prefix_len)] for _ in range(prefixes)]
    return [pre[rnd.randrange(prefixes)] + [rnd.randrange(256) for _ in range(tail)]
            for _ in range(n)]


def replicas_row(policy: str, reqs, n: int, blocks: int, wave: int) -> dict:
    """Serve `reqs` on n real replicas behind `policy`."""
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.sampling_params import SamplingParams
    from llm_playground.model.parallel.dp_replicas import DataParallelEngines
    from llm_playground.model.parallel.random_model import ModelSource
    dp = DataParallelEngines(ModelSource(random=TINY, dtype="float32"), n,
                             EngineConfig(num_blocks=blocks, block_size=4, device="cpu"),
                             policy=policy)
    try:
        t0 = time.perf_counter()
        for w in range(0, len(reqs), wave):
            for ids in reqs[w:w + wave]:
                dp.submit(ids, SamplingParams(max_tokens=2))
            dp.wait(300)
        routed = [r.routed for r in dp.report().replicas]
        return dict(measure="replicas", policy=policy, requests=len(reqs),
                    hit_rate=dp.hit_rate(), busiest_share=max(routed) / sum(routed),
                    routed=routed, seconds=time.perf_counter() - t0)
    finally:
        dp.close()


def policy_row(policy: str, reqs, n: int, in_flight: int = 6) -> dict:
    """The policy alone over `reqs`, `in_flight` requests outstanding at a time."""
    from llm_playground.model.parallel.router import POLICIES, RouterConfig
    router = POLICIES[policy](n, RouterConfig(chunk=4))
    loads, counts, window = [0] * n, [0] * n, []
    for ids in reqs:
        i = router.route(ids, loads, [True] * n)
        counts[i] += 1
        loads[i] += 1
        window.append(i)
        if len(window) > in_flight:
            loads[window.pop(0)] -= 1
    return dict(measure="policy", policy=policy, requests=len(reqs),
                hit_rate=router.matched_tokens / router.prompt_tokens,
                busiest_share=max(counts) / sum(counts), routed=counts)


def main(argv: list[str] | None = None) -> int:
    """Both policies, both measurements; table and JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--prefixes", type=int, default=4)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--policy-requests", type=int, default=2000)
    ap.add_argument("--prefix-len", type=int, default=48)
    ap.add_argument("--blocks", type=int, default=40, help="KV blocks per replica (4 tokens each)")
    ap.add_argument("--wave", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS_DIR), help="file or folder for the JSON")
    args = ap.parse_args(argv)
    reqs = workload(args.prefixes, args.requests, args.prefix_len, 4, args.seed)
    many = workload(args.prefixes, args.policy_requests, args.prefix_len, 4, args.seed + 1)
    rows = []
    for policy in ("prefix", "round_robin"):
        rows.append(replicas_row(policy, reqs, args.replicas, args.blocks, args.wave))
    for policy in ("prefix", "round_robin"):
        rows.append(policy_row(policy, many, args.replicas))
    print_table(rows, ["measure", "policy", "requests", "hit_rate", "busiest_share", "routed"])
    out = write_json(args.json, "router", rows, vars(args) | {"json": None})
    if out:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
