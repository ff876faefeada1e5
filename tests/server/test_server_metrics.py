"""GET /metrics: valid Prometheus text (HELP and TYPE per family, counters named _total,
histogram buckets cumulative ending at +Inf == _count), and figures that agree with what the
clients were told: generated tokens == the sum of usage.completion_tokens, prompt tokens == the
sum of usage.prompt_tokens, one time-to-first-token per request, one inter-token latency per
token after a sample's first, finished samples by the engine's reason, responses by status."""
from __future__ import annotations

import httpx2
import openai
from server_helpers import MODEL, parse_prometheus, server, tiny, value, wait_idle


def test_metrics_agree_with_the_responses():
    s = server(tiny())
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        empty = parse_prometheus(httpx2.get(s.url + "/metrics").text)
        assert value(empty, "playground_kv_blocks_total") == 256
        assert value(empty, "playground_kv_blocks", 'state="free"') == 256
        usages = [c.completions.create(model=MODEL, prompt="hello there my friend", max_tokens=7, temperature=0).usage,
                  c.completions.create(model=MODEL, prompt="hello there my friend", max_tokens=5, n=2, seed=1).usage,
                  c.completions.create(model=MODEL, prompt="hello there my friend", max_tokens=5, stop=["e"],
                                       temperature=0).usage]
        chunks = list(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                max_tokens=6, stream=True,
                                                stream_options={"include_usage": True}))
        usages.append(chunks[-1].usage)
        assert httpx2.post(s.url + "/v1/completions", json={"model": "nope", "prompt": "a"}).status_code == 404
        fams = wait_idle(s.url)
        gen = sum(u.completion_tokens for u in usages)
        assert value(fams, "playground_generation_tokens_total") == gen
        assert value(fams, "playground_prompt_tokens_total") == sum(u.prompt_tokens for u in usages)
        assert value(fams, "playground_time_to_first_token_seconds") == 4
        samples = 1 + 2 + 1 + 1
        itl = value(fams, "playground_inter_token_latency_seconds")
        assert itl == gen - samples      # every token after a sample's first (one token per step)
        finished = {k[1]: v for k, v in fams["playground_request_finished_total"]["samples"].items()}
        assert sum(finished.values()) == samples
        assert finished['{finish_reason="max_tokens"}'] >= 4
        assert value(fams, "playground_http_responses_total", 'code="200"') >= 5
        assert value(fams, "playground_http_responses_total", 'code="404"') == 1
        # the later prompts like the first reuse its full blocks
        assert value(fams, "playground_prefix_cache_hit_tokens_total") > 0
        rate = value(fams, "playground_prefix_cache_hit_rate")
        assert rate == (value(fams, "playground_prefix_cache_hit_tokens_total")
                        / value(fams, "playground_prefix_cache_query_tokens_total"))
        assert value(fams, "playground_kv_blocks", 'state="used"') == 0
        assert value(fams, "playground_engine_steps_total") >= 7
        assert value(fams, "playground_generation_tokens_per_second") > 0
        assert httpx2.get(s.url + "/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")
    finally:
        s.stop()
