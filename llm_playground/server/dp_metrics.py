"""/metrics of a data-parallel server: the whole server, each replica, and the router.

Every family of server/metrics.py appears twice over: the sample without a `replica` label is
the whole server (the replicas' figures added up: counters, histograms, and gauges such as
running requests or blocks per state; HTTP responses are counted once, by the server), and one
sample per replica carries `replica="i"` (so `sum(...)` over a family counts the server twice:
select `{replica!=""}` or the unlabelled sample). Then the router's own families, from
server/dp_bridge.py's DataParallelBridge and model/parallel/router.py:

  playground_replica_up{replica}                gauge    1 while the replica's process runs
  playground_router_requests_total{replica}     counter  engine requests routed to it (re-sent ones too)
  playground_router_resent_total                counter  engine requests re-sent after a replica died
  playground_router_prefix_matched_tokens_total counter  prompt tokens the chosen replica's tree held
  playground_router_prompt_tokens_total         counter  prompt tokens routed
  playground_router_prefix_hit_rate             gauge    matched / routed prompt tokens

It does not measure anything itself (each replica's ReplicaBridge writes its own Metrics).
"""
from __future__ import annotations

from llm_playground.server.metrics import Metrics, render_families


class DataParallelMetrics(Metrics):
    """The server's Metrics (HTTP responses) plus its replicas' and the router's."""

    def __init__(self, bridge) -> None:
        super().__init__()
        self.bridge = bridge                     # server/dp_bridge.DataParallelBridge

    @property
    def replicas(self) -> list[Metrics]:
        """Each replica's own Metrics, by index."""
        return [r.metrics for r in self.bridge.replicas]

    def render(self) -> str:
        """The exposition text: totals, per-replica samples, the router's families."""
        copies = []
        for m in self.replicas:
            c = Metrics(clock=m._clock)
            c.merge(m)
            copies.append(c)
        total = Metrics()
        for c in copies:
            total.merge(c)
        with self._lock:
            total.http = dict(self.http)
        fams = total.families()
        index = {name: k for k, (name, _, _, _) in enumerate(fams)}
        for i, c in enumerate(copies):
            for name, _, _, samples in c.families(f'replica="{i}"'):
                fams[index[name]][3].extend(samples)
        return render_families(fams + self.router_families())

    def router_families(self) -> list[tuple[str, str, str, list[str]]]:
        """The router's families (module docstring)."""
        b, p = self.bridge, "playground_"
        router = b.router
        matched = getattr(router, "matched_tokens", 0) if router is not None else 0
        prompt = getattr(router, "prompt_tokens", 0) if router is not None else 0
        rate = matched / prompt if prompt else 0.0
        per = range(len(b.replicas))
        return [
            (p + "replica_up", "gauge", "1 while the data-parallel replica's engine process runs.",
             [f'{p}replica_up{{replica="{i}"}} {int(ok)}' for i, ok in zip(per, b.up())]),
            (p + "router_requests_total", "counter", "Engine requests the router sent to each replica.",
             [f'{p}router_requests_total{{replica="{i}"}} {b.routed[i]}' for i in per]),
            (p + "router_resent_total", "counter", "Engine requests re-sent after their replica died.",
             [f"{p}router_resent_total {b.resent}"]),
            (p + "router_prefix_matched_tokens_total", "counter",
             "Prompt tokens the chosen replica's prefix tree already held.",
             [f"{p}router_prefix_matched_tokens_total {matched}"]),
            (p + "router_prompt_tokens_total", "counter", "Prompt tokens the router routed.",
             [f"{p}router_prompt_tokens_total {prompt}"]),
            (p + "router_prefix_hit_rate", "gauge", "Router prefix matched tokens over routed tokens.",
             [f"{p}router_prefix_hit_rate {rate!r}"]),
        ]
