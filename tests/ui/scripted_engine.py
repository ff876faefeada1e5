"""A scripted stand-in for model.engine.Engine, for the UI tests.

Same public API as Engine (add_request / abort / has_unfinished / set_pattern / step /
cache_report / generate / attention_weights) and the same error rules (a bad request is finished
with finish_reason "error" and reported by the next step, never raised), and it fills the real
report dataclasses of model/engine/reports.py from a small but real block manager: a free list,
reference counts, a prefix cache of full blocks (hash = all ids up to the block's end), LRU
eviction of cached blocks, fork of parallel samples sharing the prompt's blocks, preemption when
blocks run out. What it does not do is run a model: each request's answer is a fixed text
(`reply`), tokenized with a real bpe.Tokenizer and released through its streaming decoder.
Step times are fixed numbers (not measured) so snapshots are deterministic.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from llm_playground import bpe
from llm_playground.model.engine.reports import (CACHED, FREE, SHARED, USED, BlockInfo, CacheReport, RequestOutput,
                           SequenceReport, StepReport)
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.attention_patterns import parse_pattern
from llm_playground.playground.messages import ModelInfo

LAYERS, KV_HEADS, HEADS, HEAD_DIM, DTYPE_BYTES = 2, 2, 4, 8, 4
PREFILL_S_PER_TOKEN, DECODE_STEP_S = 0.0005, 0.02
DEFAULT_REPLY = ("**Hello!** Here is a scripted answer with `code`, a list:\n\n- one\n- two\n\n"
                 "and a smile 🙂 at the end.")


def make_tokenizer() -> "bpe.Tokenizer":
    """Byte-level BPE with a handful of merges and ChatML-like specials."""
    merges = [(b"t", b"h"), (b"th", b"e"), (b" ", b"the"), (b"e", b"r"), (b" ", b"a"),
              (b"i", b"n"), (b"in", b"g"), (b"o", b"n"), (b"l", b"l"), (b"e", b"ll")]
    vocab = {i: bytes([i]) for i in range(256)}
    for a, b in merges:
        vocab[len(vocab)] = a + b
    specials = {"<|im_start|>": len(vocab), "<|im_end|>": len(vocab) + 1}
    return bpe.Tokenizer(bpe.patterns.CL100K, vocab, merges, specials, name="scripted-bpe")


@dataclass
class _Seq:
    seq_id: int
    request_id: int
    prompt: list[int]
    params: SamplingParams
    script: list[int]
    sample_index: int = 0
    output: list[int] = field(default_factory=list)
    table: list[int] = field(default_factory=list)
    status: str = "waiting"
    num_cached: int = 0
    computed: int = 0
    new_ids: list[int] = field(default_factory=list)
    delta: str = ""
    finish_reason: str | None = None
    error: str | None = None
    arrival_step_time: float = 0.0
    decoder: object = None
    just_finished: bool = False

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output


class ScriptedEngine:
    def __init__(self, num_blocks: int = 64, block_size: int = 4, reply: str = DEFAULT_REPLY,
                 step_delay_s: float = 0.0, attention: str = "dense",
                 chat_template: str | None = None) -> None:
        self.tokenizer = make_tokenizer()
        self.chat_template = chat_template
        self.reply_ids = self.tokenizer.encode_ordinary(reply)
        self.num_blocks, self.block_size = num_blocks, block_size
        self.step_delay_s = step_delay_s
        self.pattern = parse_pattern(attention)
        self.ref = [0] * num_blocks
        self.owners: list[list[int]] = [[] for _ in range(num_blocks)]
        self.free = list(range(num_blocks))
        self.cached: OrderedDict[tuple, int] = OrderedDict()   # prefix key -> block (LRU order)
        self.key_of: dict[int, tuple] = {}
        self.seqs: dict[int, _Seq] = {}
        self.waiting: list[_Seq] = []
        self.pending: list[RequestOutput] = []
        self.finished_reports: list[SequenceReport] = []   # as Engine: reported once, when finished
        self.prefix_hits = self.prefix_queries = self.preemptions = 0
        self.clock = 0.0
        self._next_req = self._next_seq = self._step = 0
        self.calls: list[tuple] = []        # set_pattern / attention_weights calls, for tests
        self.held = False                   # True: has_unfinished() says no, so the app's worker
                                            # leaves the engine alone and a test steps it itself

    @property
    def bytes_per_block(self) -> int:
        return 2 * LAYERS * KV_HEADS * HEAD_DIM * DTYPE_BYTES * self.block_size

    def info(self) -> ModelInfo:
        return ModelInfo("scripted-model", "(scripted)", "cpu", "float32", DTYPE_BYTES, LAYERS, HEADS,
                         KV_HEADS, HEAD_DIM, 2048, self.num_blocks, self.block_size,
                         self.bytes_per_block, self.tokenizer, self.chat_template, str(self.pattern))

    # ---- requests --------------------------------------------------------------------------
    def add_request(self, prompt_ids, params: SamplingParams | None = None, pattern=None) -> int:
        params = params or SamplingParams()
        rid, self._next_req = self._next_req, self._next_req + 1
        seq = self._new_seq(rid, list(prompt_ids), params, 0)
        need = -(-(len(seq.prompt) + 1) // self.block_size)
        if not seq.prompt:
            self._finish(seq, "error", "empty prompt: at least one token is needed")
        elif need > self.num_blocks:
            self._finish(seq, "error", f"prompt of {len(seq.prompt)} tokens needs more than the whole "
                                       f"KV cache ({self.num_blocks} blocks of {self.block_size} tokens)")
        else:
            self.waiting.append(seq)
        return rid

    def _new_seq(self, rid: int, prompt: list[int], params: SamplingParams, index: int) -> _Seq:
        seq = _Seq(self._next_seq, rid, prompt, params, self.reply_ids, index,
                   arrival_step_time=self.clock, decoder=self.tokenizer.stream_decoder())
        self._next_seq += 1
        self.seqs[seq.seq_id] = seq
        return seq

    def abort(self, request_id: int) -> None:
        for seq in list(self.seqs.values()):
            if seq.request_id == request_id and seq.finish_reason is None:
                self._finish(seq, "abort")

    def has_unfinished(self) -> bool:
        return not self.held and self._busy()

    def _busy(self) -> bool:
        return bool(self.waiting) or any(s.status == "running" for s in self.seqs.values()) or bool(self.pending)

    def set_pattern(self, spec: str) -> None:
        self.pattern = parse_pattern(spec)
        self.calls.append(("set_pattern", spec))

    # ---- blocks ------------------------------------------------------------------------------
    def _take_block(self) -> int | None:
        if self.free:
            return self.free.pop(0)
        for key, block in self.cached.items():       # evict the least recently used unowned block
            if self.ref[block] == 0:
                del self.cached[key], self.key_of[block]
                return block
        return None

    def _hold(self, seq: _Seq, block: int) -> None:
        self.ref[block] += 1
        self.owners[block].append(seq.seq_id)
        seq.table.append(block)

    def _release(self, seq: _Seq) -> None:
        for block in seq.table:
            self.ref[block] -= 1
            self.owners[block].remove(seq.seq_id)
            if self.ref[block] == 0 and block not in self.key_of:
                self.free.append(block)
        seq.table = []

    def _prefill(self, seq: _Seq) -> bool:
        bs, ids = self.block_size, seq.prompt
        full = len(ids) // bs
        self.prefix_queries += len(ids)
        plan, hits = [], 0
        for i in range(full):
            block = self.cached.get(tuple(ids[: (i + 1) * bs]))
            if block is None:
                break
            plan.append(block)
            hits += bs
        need = -(-(len(ids) + 1) // bs) - len(plan)
        if need > len(self.free) + sum(1 for b in self.cached.values() if self.ref[b] == 0 and b not in plan):
            return False
        for block in plan:
            self._hold(seq, block)
        for _ in range(need):
            self._hold(seq, self._take_block())
        for i in range(full):                    # register the prompt's full blocks
            key = tuple(ids[: (i + 1) * bs])
            if key not in self.cached:
                self.cached[key] = seq.table[i]
                self.key_of[seq.table[i]] = key
            self.cached.move_to_end(key)
        seq.num_cached, seq.computed, seq.status = hits, len(ids), "running"
        self.prefix_hits += hits
        return True

    # ---- one step ----------------------------------------------------------------------------
    def step(self) -> StepReport:
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        prefill = decode = 0
        ttft: dict[int, float] = {}
        running = [s for s in self.seqs.values() if s.status == "running"]
        for seq in running:                      # decode first
            if seq.computed == len(seq.table) * self.block_size:
                block = self._take_block()
                if block is None:
                    victim = max(running, key=lambda s: s.seq_id)
                    if victim is seq and len(running) == 1:
                        self._finish(seq, "length" if seq.output else "error",
                                     None if seq.output else "out of KV blocks")
                        continue
                    self._release(victim)
                    victim.status, victim.output, victim.computed = "waiting", [], 0
                    self.waiting.append(victim)
                    self.preemptions += 1
                    if victim is seq:
                        continue
                    block = self._take_block()
                self._hold(seq, block)
            elif self.ref[seq.table[-1]] > 1:        # copy-on-write of a shared, partly filled block
                block = self._take_block()
                if block is not None:
                    old = seq.table.pop()
                    self.ref[old] -= 1
                    self.owners[old].remove(seq.seq_id)
                    self._hold(seq, block)
            seq.computed += 1
            decode += 1
            self._emit(seq)
        for seq in list(self.waiting):           # then admit prompts that fit
            if self._prefill(seq):
                self.waiting.remove(seq)
                prefill += len(seq.prompt) - seq.num_cached
                ttft[seq.request_id] = self.clock - seq.arrival_step_time + 0.05
                self._emit(seq)
                for i in range(1, seq.params.n):
                    child = self._new_seq(seq.request_id, seq.prompt, seq.params, i)
                    for block in seq.table:
                        self._hold(child, block)
                    child.status, child.computed, child.num_cached = "running", seq.computed, seq.num_cached
                    self._emit(child)
        dt = prefill * PREFILL_S_PER_TOKEN + (DECODE_STEP_S if decode else 0.0) or DECODE_STEP_S
        self.clock += dt
        self._step += 1
        outputs, self.pending = self.pending, []
        for seq in self.seqs.values():
            if seq.new_ids or seq.just_finished:
                outputs.append(self._output(seq))
        live = [s for s in self.seqs.values() if s.status in ("running", "waiting")]
        finished, self.finished_reports = self.finished_reports, []
        return StepReport(self._step, outputs, prefill, decode, dt, prefill / dt, decode / dt, ttft,
                          dt if decode else 0.0, self._seq_reports(live) + finished, self.cache_report(),
                          sum(s.status == "running" for s in live), sum(s.status == "waiting" for s in live))

    def _emit(self, seq: _Seq) -> None:
        k = len(seq.output)
        if seq.params.ignore_eos:                # benchmarks and the "load" action: loop the script
            tok = seq.script[k % len(seq.script)]
        else:
            tok = seq.script[k] if k < len(seq.script) else None
        if tok is None:                          # the script is exhausted: EOS
            self._finish(seq, "stop")
            return
        seq.output.append(tok)
        seq.new_ids.append(tok)
        seq.delta += seq.decoder.push(tok)
        if len(seq.output) >= seq.params.max_tokens:
            self._finish(seq, "length")

    def _finish(self, seq: _Seq, reason: str, error: str | None = None) -> None:
        seq.delta += seq.decoder.flush() if seq.decoder else ""
        seq.finish_reason, seq.error, seq.status = reason, error, "finished"
        self.finished_reports += self._seq_reports([seq])     # its blocks before they are freed
        self._release(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        seq.just_finished = reason not in ("abort", "error")
        if not seq.just_finished:
            self.pending.append(self._output(seq))

    def _output(self, seq: _Seq) -> RequestOutput:
        out = RequestOutput(seq.request_id, seq.new_ids, seq.delta, seq.status == "finished",
                            seq.finish_reason, seq.error, seq.sample_index)
        seq.new_ids, seq.delta, seq.just_finished = [], "", False
        return out

    # ---- reports -------------------------------------------------------------------------------
    def _seq_reports(self, live: list[_Seq]) -> list[SequenceReport]:
        return [SequenceReport(s.seq_id, s.request_id, s.status, len(s.prompt), len(s.output),
                               s.num_cached, list(s.table), s.computed) for s in live]

    def cache_report(self) -> CacheReport:
        bs = self.block_size
        fill = {}
        for s in self.seqs.values():
            for i, b in enumerate(s.table):
                fill[b] = max(fill.get(b, 0), min(bs, max(0, s.computed - i * bs)))
        blocks = []
        for b in range(self.num_blocks):
            state = (SHARED if self.ref[b] > 1 else USED if self.ref[b] == 1
                     else CACHED if b in self.key_of else FREE)
            blocks.append(BlockInfo(b, state, self.ref[b], list(self.owners[b]),
                                    fill.get(b, bs if state == CACHED else 0)))
        counts = {st: sum(1 for x in blocks if x.state == st) for st in (FREE, CACHED, USED, SHARED)}
        owned = [x for x in blocks if x.state in (USED, SHARED)]
        per_token = self.bytes_per_block // bs
        live = [s for s in self.seqs.values() if s.status in ("running", "waiting")]
        reserved = sum(min(len(s.prompt) + s.params.max_tokens, 2048) for s in live) * per_token
        return CacheReport(self.num_blocks, bs, self.bytes_per_block, counts[FREE], counts[CACHED],
                           counts[USED], counts[SHARED], blocks, len(owned) * self.bytes_per_block,
                           sum(bs - x.num_tokens for x in owned) * per_token, reserved,
                           self.prefix_hits, self.prefix_queries, self.preemptions)

    def generate(self, prompt_ids, params=None, on_report=None) -> list[int]:
        rid = self.add_request(prompt_ids, params)
        ids: list[int] = []
        while self._busy():
            report = self.step()
            if on_report:
                on_report(report)
            ids += [t for o in report.outputs if o.request_id == rid and o.sample_index == 0
                    for t in o.new_token_ids]
        return ids

    def attention_weights(self, prompt_ids, layer: int, head: int) -> list[list[float]]:
        if not prompt_ids:
            raise ValueError("attention_weights needs at least one token")
        if not (0 <= layer < LAYERS and 0 <= head < HEADS):
            raise ValueError(f"layer {layer} / head {head} outside the model ({LAYERS} layers, {HEADS} heads)")
        self.calls.append(("attention_weights", len(prompt_ids), layer, head))
        n = len(prompt_ids)
        pos = torch.arange(n, dtype=torch.float32)
        scores = -0.1 * (pos[:, None] - pos[None, :]) * (head + 1)        # (T, T) recency bias
        scores[:, 0] += 2.0                                               # an attention sink
        scores = scores.masked_fill(~self.pattern.token_mask(n), float("-inf"))
        return torch.softmax(scores, dim=-1).tolist()


def scripted_factory(engine: ScriptedEngine):
    """An EngineFactory (as PlaygroundApp takes) returning this engine."""
    def factory(progress):
        progress("reading scripted weights")
        return engine.info(), engine
    return factory
