"""The real engine for the UI tests: model.engine.Engine on a tiny random Llama (float32, CPU),
a small KV cache, and a fake clock. Not a stand-in: every block, report and token is the engine's.

- `tiny_loaded()`: a weights.loader.LoadedModel of the tiny Llama of tests/engine/engine_helpers.py
  (`tiny_config`: 2 layers, 4 heads, 2 KV heads, head dim 8) with a ChatML-like byte-level BPE
  (`chat_tokenizer`: 256 bytes, 10 merges, <|im_start|> and <|im_end|>, the latter the EOS). Its
  random weights are shaped so that the model only ever writes lowercase letters, spaces, "." and
  ","  (and the merges of those): residual dimension 0 is a constant no layer writes to, and the
  output head uses it as a bias that keeps every other token (EOS included) far below. So answers
  are readable, never end by themselves (they run to max tokens, or to the end of the KV cache),
  and are the same on every run (a fixed seed per request). `can_end=True` lets <|im_end|> (the
  EOS) compete with the writable tokens, so sampled answers end by themselves after some tokens.
- `FakeClock`: each call advances `tick_s` (the engine calls it at arrival and three times per
  step: start, sample, end), so a step lasts exactly 2 ticks and the time to a first token is
  2 ticks: the stats strip shows exact figures. `real_s` sleeps that long per call (in real time)
  when a test needs the answer to stream slowly enough to be interrupted.
- `tiny_engine(...)` builds Engine(loaded, EngineConfig(...), clock=FakeClock(...));
  `tiny_factory(engine)` is the EngineFactory PlaygroundApp takes (the seam the app has for any
  engine); `record_steps(engine)` keeps every StepReport the engine returns, for the oracles;
  `hold(engine)` lets a test step the engine itself (see there).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from engine_helpers import tiny_config

from llm_playground import bpe
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.model.network.llama import LlamaForCausalLM
from llm_playground.model.network.weight_contract import expected_shapes
from llm_playground.model.weights.loader import LoadedModel
from llm_playground.playground.engine_factory import describe

MODEL_NAME = "tiny-llama"
MERGES = [(b"t", b"h"), (b"th", b"e"), (b" ", b"the"), (b"e", b"r"), (b" ", b"a"),
          (b"i", b"n"), (b"in", b"g"), (b"o", b"n"), (b"l", b"l"), (b"e", b"ll")]
IM_START, IM_END = 256 + len(MERGES), 256 + len(MERGES) + 1
VOCAB_SIZE = IM_END + 1
TICK_S = 0.005            # one clock call; a step is 2 ticks = 10 ms: one decode token = 100 tok/s


def chat_tokenizer() -> bpe.Tokenizer:
    """Byte-level BPE with a handful of merges and ChatML-like specials."""
    vocab = {i: bytes([i]) for i in range(256)}
    for a, b in MERGES:
        vocab[len(vocab)] = a + b
    specials = {"<|im_start|>": IM_START, "<|im_end|>": IM_END}
    return bpe.Tokenizer(bpe.patterns.CL100K, vocab, MERGES, specials, name="tiny-bpe")


def _writable(tok: bpe.Tokenizer) -> list[int]:
    ok = set(b"abcdefghijklmnopqrstuvwxyz .,")
    return [i for i in range(256 + len(MERGES)) if set(tok.id_to_bytes(i)) <= ok]


_MODELS: dict[tuple[int, bool], LlamaForCausalLM] = {}


def _model(seed: int, can_end: bool = False) -> LlamaForCausalLM:
    if (seed, can_end) in _MODELS:
        return _MODELS[seed, can_end]
    cfg = tiny_config(vocab_size=VOCAB_SIZE, eos_token_ids=(IM_END,), tie_word_embeddings=False)
    g = torch.Generator().manual_seed(seed)
    w = {n: torch.randn(s, generator=g) * 0.5 + (1.0 if "norm" in n else 0.0)
         for n, s in expected_shapes(cfg).items()}
    # Residual dimension 0: the same constant for every token, and no layer writes to it, so
    # after the final norm it is positive at every position; the head turns it into a bias.
    w["model.embed_tokens.weight"][:, 0] = 2.0
    for i in range(cfg.num_layers):
        w[f"model.layers.{i}.self_attn.o_proj.weight"][0] = 0.0
        w[f"model.layers.{i}.mlp.down_proj.weight"][0] = 0.0
    w["model.norm.weight"][0] = 1.0
    head = torch.randn(cfg.vocab_size, cfg.hidden_size, generator=g) * 0.8
    allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool)
    allowed[_writable(chat_tokenizer())] = True
    allowed[IM_END] = can_end
    head[:, 0] = torch.where(allowed, 2000.0, -2000.0)   # h[0] is 0.03 to 0.09
    w["lm_head.weight"] = head
    model = LlamaForCausalLM(cfg, torch.float32, "cpu")
    model.load_weights(lambda n: w[n])
    _MODELS[seed, can_end] = model.eval()
    return _MODELS[seed, can_end]


def tiny_loaded(chat_template: str | None = None, seed: int = 0, can_end: bool = False) -> LoadedModel:
    model = _model(seed, can_end)
    return LoadedModel(model=model, config=model.config, tokenizer=chat_tokenizer(),
                       chat_template=chat_template, name=MODEL_NAME, path=Path("tiny"), dtype=torch.float32,
                       device=torch.device("cpu"), weight_format="float32")


class FakeClock:
    """Seconds that advance `tick_s` per call (thread-safe); optionally sleeps `real_s` per call."""

    def __init__(self, tick_s: float = TICK_S, real_s: float = 0.0) -> None:
        self.tick_s, self.real_s = tick_s, real_s
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        if self.real_s:
            time.sleep(self.real_s)
        with self._lock:
            self.calls += 1
            return self.calls * self.tick_s


def tiny_engine(num_blocks: int = 128, block_size: int = 4, chat_template: str | None = None,
                real_s: float = 0.0, can_end: bool = False, **cfg) -> Engine:
    """The real Engine on the tiny model: `num_blocks` x `block_size` tokens of KV cache."""
    return Engine(tiny_loaded(chat_template, can_end=can_end),
                  EngineConfig(num_blocks=num_blocks, block_size=block_size, **cfg),
                  clock=FakeClock(real_s=real_s))


def tiny_factory(engine: Engine):
    """An EngineFactory (as PlaygroundApp takes): (progress) -> (ModelInfo, engine)."""
    def factory(progress):
        progress("building the tiny random model")
        return describe(engine, engine.loaded), engine
    return factory


def record_steps(engine: Engine) -> list:
    """Every StepReport `engine.step()` returns from now on, in order (the engine is unchanged)."""
    reports: list = []
    step = engine.step

    def recorded():
        report = step()
        reports.append(report)
        return report

    engine.step = recorded
    return reports


def hold(engine: Engine) -> None:
    """Let the test step the engine on its own thread: the app's worker steps only while
    has_unfinished() is true, so this one method is patched to say no (the worker then leaves the
    engine alone). The test must be the only caller of step() from here on."""
    engine.has_unfinished = lambda: False


def answer_text(reports: list, request_id: int, sample_index: int = 0) -> tuple[str, list[int]]:
    """(text, ids) the engine released for one sample of one request, from its StepReports."""
    outs = [o for r in reports for o in r.outputs if o.request_id == request_id and o.sample_index == sample_index]
    return "".join(o.text_delta for o in outs), [t for o in outs for t in o.new_token_ids]
