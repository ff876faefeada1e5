"""The load generator of benchmarks/serve_load.py: concurrent streaming /v1/completions over httpx2.

`run_load(url, requests, width, concurrency)` sends every (prompt ids, output length) request
at once (at most `concurrency` open), streaming, greedy, `ignore_eos`, and returns the wall time
and per request (time to first token, inter-token latencies, tokens). A chunk's tokens are
counted from its text: the benchmark's tokenizer writes token i as a fixed-width "0000i ", so
len(text) // width tokens. It must not be the bottleneck it measures, so a middle chunk is read
by slicing, not parsed as JSON. Nothing here knows about the engine.
"""
from __future__ import annotations

import asyncio
import json
import time

_MID = '"finish_reason": null}]}'


def _tokens_in(data: str, width: int) -> int:
    """Tokens in one completion chunk. The load generator must not be the bottleneck it
    measures, so a middle chunk (one choice, text of digits and spaces, no escapes) is read by
    slicing; the last chunk, and anything unexpected, through json."""
    if data.endswith(_MID) and data.count('"text": "') == 1:
        start = data.index('"text": "') + 9
        return (data.index('"', start) - start) // width
    obj = json.loads(data)
    if "error" in obj:
        raise RuntimeError(f"stream error: {obj['error']['message']}")
    return sum(len(c["text"]) for c in obj["choices"]) // width


async def _one(client, url: str, prompt: list[int], n: int, width: int, sem) -> tuple:
    body = {"model": "bench", "prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True,
            "ignore_eos": True}
    async with sem:
        t0 = time.perf_counter()
        first, last, itl, tokens = None, None, [], 0
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"server answered {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                k = _tokens_in(data, width)
                if not k:
                    continue
                now = time.perf_counter()
                tokens += k
                if first is None:
                    first = now - t0
                elif last is not None:
                    itl += [(now - last) / k] * k
                last = now
        return first, itl, tokens


async def run_load(url: str, reqs, width: int, concurrency: int) -> tuple[float, list]:
    import httpx2
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=None) as client:
        t0 = time.perf_counter()
        res = await asyncio.gather(*(_one(client, url, p, o, width, sem) for p, o in reqs))
        return time.perf_counter() - t0, res
