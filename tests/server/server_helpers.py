"""Helpers for the server tests: a tiny engine with a ChatML template, a running server around
it, an oracle engine for the same model, and a Prometheus text parser that checks the format."""
from __future__ import annotations

import math
import re
import time

from tiny_engine import tiny_loaded

from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.server.app import ServerThread
from llm_playground.server.config import ServerConfig

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MODEL = "tiny-llama"


def tiny(num_blocks: int = 256, block_size: int = 4, can_end: bool = False, clock=None, **cfg) -> Engine:
    """The real engine on the tiny random Llama (tests/ui/tiny_engine.py) with a ChatML template."""
    kwargs = {"clock": clock} if clock is not None else {}
    return Engine(tiny_loaded(CHATML, can_end=can_end),
                  EngineConfig(num_blocks=num_blocks, block_size=block_size, **cfg), **kwargs)


def server(engine: Engine, **config) -> ServerThread:
    """A started server around `engine` on a free port (stop it, or use it as a context)."""
    return ServerThread(engine, ServerConfig(port=0, **config)).start()


def oracle(prompts: list[list[int]], params, **engine_kw) -> dict:
    """{(prompt index, sample index): (text, ids)} from an in-process engine of the same model."""
    e = tiny(**engine_kw)
    rids = [e.add_request(p, params) for p in prompts]
    got: dict = {}
    while e.has_unfinished():
        for out in e.step().outputs:
            key = (rids.index(out.request_id), out.sample_index)
            text, ids = got.get(key, ("", []))
            got[key] = (text + out.text_delta, ids + list(out.new_token_ids))
    return got


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse_prometheus(text: str) -> dict:
    """{family: {"type", "help", "samples": {(name, labels): value}}}; AssertionError where the
    text breaks the exposition format (a sample without HELP/TYPE, a histogram whose buckets
    are not cumulative or lack +Inf, +Inf != _count)."""
    fams: dict = {}
    current = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_ = line[7:].split(" ", 1)
            fams[name] = {"help": help_, "type": None, "samples": {}}
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and kind in ("counter", "gauge", "histogram"), line
            fams[name]["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels, value = m.groups()
            assert current is not None and name.startswith(current), f"{name} outside its family"
            fams[current]["samples"][(name, labels or "")] = float(value)
    for name, fam in fams.items():
        assert fam["type"] is not None, name
        if fam["type"] == "counter":
            assert name.endswith("_total")
        if fam["type"] == "histogram":              # per label set (a replica's, the total)
            groups: dict = {}
            for (sample, lab), v in fam["samples"].items():
                if sample == name + "_bucket":
                    le = re.search(r'le="([^"]+)"', lab).group(1)
                    rest = re.sub(r',?le="[^"]+"', "", lab).replace("{,", "{").replace("{}", "")
                    groups.setdefault(rest, []).append((float(le.replace("+Inf", "inf")), v))
            assert groups, name
            for rest, buckets in groups.items():
                les = [le for le, _ in buckets]
                assert les == sorted(les) and math.isinf(les[-1]), name
                counts = [v for _, v in buckets]
                assert counts == sorted(counts), f"{name}: buckets not cumulative"
                assert counts[-1] == fam["samples"][(name + "_count", rest)]
                assert (name + "_sum", rest) in fam["samples"]
    return fams


def value(fams: dict, family: str, labels: str = "") -> float:
    """One sample's value: value(f, "playground_kv_blocks", 'state="used"')."""
    fam = fams[family]
    key = (family, "{" + labels + "}" if labels else "")
    if fam["type"] == "histogram":
        return fam["samples"][(family + "_count", key[1])]
    return fam["samples"].get(key, 0.0)


def wait_idle(url: str, timeout: float = 30.0, headers=None) -> dict:
    """Poll /metrics until nothing runs or waits; returns the parsed metrics."""
    import httpx2
    deadline = time.monotonic() + timeout
    while True:
        fams = parse_prometheus(httpx2.get(url + "/metrics", headers=headers).text)
        if value(fams, "playground_requests_running") == 0 and value(fams, "playground_requests_waiting") == 0:
            return fams
        assert time.monotonic() < deadline, "the engine did not go idle"
        time.sleep(0.05)


def tiny_factory(num_blocks: int = 256, block_size: int = 4):
    """A picklable engine factory for the engine-process tests (runs in the child)."""
    import functools
    return functools.partial(tiny, num_blocks=num_blocks, block_size=block_size)


def process_server(num_blocks: int = 256, **config) -> ServerThread:
    """A started server whose engine (the tiny model) runs in a process of its own."""
    return ServerThread(config=ServerConfig(port=0, **config), factory=tiny_factory(num_blocks)).start()


def replica_tiny(num_blocks: int = 256, block_size: int = 4, real_s: float = 0.0) -> Engine:
    """One data-parallel replica's engine (runs in its process): the tiny model on one torch
    thread (two replicas share the 2 cores); `real_s` > 0 sleeps that long per engine clock call
    (3 per step), so a test can act while requests run."""
    import torch
    from tiny_engine import FakeClock
    torch.set_num_threads(1)
    return tiny(num_blocks, block_size, clock=FakeClock(real_s=real_s) if real_s else None)


def dp_server(n: int = 2, num_blocks: int = 256, real_s: float = 0.0, **config) -> ServerThread:
    """A started server with `n` data-parallel replicas of the tiny model, each in its process."""
    import functools
    factories = [functools.partial(replica_tiny, num_blocks, 4, real_s) for _ in range(n)]
    return ServerThread(config=ServerConfig(port=0, **config), factories=factories).start()
