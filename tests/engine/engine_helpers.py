"""Test helper: a tiny random Llama (our LlamaForCausalLM, float32) wrapped as a LoadedModel, with
a byte-level tokenizer (ids 0..255 = bytes), so engine tests run in well under a second per case.
Not product code."""
from __future__ import annotations

from pathlib import Path

import torch

from llm_playground import bpe
from llm_playground.model.network.batch import AttentionBatch
from llm_playground.model.network.config import ModelConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.network.kv_cache import KVCache
from llm_playground.model.network.llama import LlamaForCausalLM
from llm_playground.model.weights.loader import LoadedModel
from llm_playground.model.engine.attention_patterns import parse_pattern
from llm_playground.model.network.weight_contract import expected_shapes

EOS = 256


def tiny_config(**over) -> ModelConfig:
    fields = dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8, max_position=512, rope_theta=10000.0,
                  tie_word_embeddings=True, eos_token_ids=(EOS,))
    fields.update(over)
    return ModelConfig(**fields)


def byte_tokenizer() -> bpe.Tokenizer:
    vocab = {i: bytes([i]) for i in range(256)}
    vocab.update({256: b"<eos>", 257: b"<a>", 258: b"<b>", 259: b"<c>"})
    return bpe.Tokenizer(bpe.patterns.GPT2, vocab, None,
                         {"<eos>": 256, "<a>": 257, "<b>": 258, "<c>": 259}, name="bytes")


def tiny_loaded(seed: int = 0, device: str = "cpu", **over) -> LoadedModel:
    cfg = tiny_config(**over)
    g = torch.Generator().manual_seed(seed)
    shapes = expected_shapes(cfg)
    # Large embedding scale so greedy choices are decisive, and not constant over time.
    weights = {n: torch.randn(s, generator=g) * (1.0 if "norm" in n else 0.5) + (1.0 if "norm" in n else 0)
               for n, s in shapes.items()}
    model = LlamaForCausalLM(cfg, torch.float32, device)
    model.load_weights(lambda n: weights[n])
    return LoadedModel(model=model.eval(), config=cfg, tokenizer=byte_tokenizer(), chat_template=None,
                       name="tiny", path=Path("tiny"), dtype=torch.float32,
                       device=torch.device(device), weight_format="float32")


_CACHE: dict[int, LoadedModel] = {}


def engine(num_blocks: int = 64, block_size: int = 4, seed: int = 0, **cfg) -> Engine:
    if seed not in _CACHE:
        _CACHE[seed] = tiny_loaded(seed)
    return Engine(_CACHE[seed], EngineConfig(num_blocks=num_blocks, block_size=block_size, **cfg))


def run_all(e: Engine, max_steps: int = 10_000) -> tuple[dict[tuple[int, int], list[int]], list]:
    """Step until idle; returns {(request id, sample index): ids} and the reports."""
    ids: dict[tuple[int, int], list[int]] = {}
    reports = []
    for _ in range(max_steps):
        if not e.has_unfinished():
            break
        r = e.step()
        reports.append(r)
        for out in r.outputs:
            ids.setdefault((out.request_id, out.sample_index), []).extend(out.new_token_ids)
    assert not e.has_unfinished(), "engine did not finish"
    return ids, reports


def prompts(n: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(0, 256, (k,), generator=g).tolist() for k in lens]


def reference_greedy(prompt: list[int], n: int, seed: int = 0, pattern: str = "dense") -> list[int]:
    """Greedy ids of the tiny model (seed) from a loop that recomputes the whole sequence under
    the pattern's mask at every token: no engine, no paging, no cache reuse (the oracle of the
    engine's greedy tests)."""
    loaded = tiny_loaded(seed)
    spec = parse_pattern(pattern).spec
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(last_logits(loaded, ids, spec).argmax(-1)))
    return ids[len(prompt):]


def last_logits(loaded: LoadedModel, ids: list[int], spec=None) -> torch.Tensor:
    """Last-position logits (V,) of `loaded` over `ids`: one plain forward of the whole sequence
    under `spec` (dense when None) into a fresh one-block cache: no engine, no paging, no reuse."""
    cfg, model = loaded.config, loaded.model
    T = len(ids)
    kv = KVCache(cfg.num_layers, 1, T, cfg.num_kv_heads, cfg.head_dim, torch.float32, "cpu")
    batch = AttentionBatch(positions=torch.arange(T), slot_mapping=torch.arange(T),
                           cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32),
                           context_lens=torch.tensor([T], dtype=torch.int32),
                           block_tables=torch.zeros(1, 1, dtype=torch.int32), max_q_len=T,
                           max_context_len=T, mask=spec if spec is not None else parse_pattern("dense").spec)
    with torch.inference_mode():
        hidden = model(torch.tensor(ids), batch, kv)
        return model.compute_logits(hidden[-1:])[0]


def brute_blocks(e) -> list[tuple]:
    """(id, state, ref count, owners, tokens) per block, recounted from the live sequences'
    tables and computed counts (a block holds what its fullest owner computed in it)."""
    bs, bm = e.bm.block_size, e.bm
    owners, filled = {}, {}
    for s in e._live_seqs():
        if not bm.has(s.seq_id):
            continue
        for i, b in enumerate(bm.table(s.seq_id)):
            if b >= 0:
                owners.setdefault(b, set()).add(s.seq_id)
                filled[b] = max(filled.get(b, 0), min(bs, max(0, s.num_computed - i * bs)))
    out = []
    for b in range(bm.num_blocks):
        ref = len(owners.get(b, ()))
        hashed = bm.block_hash(b) is not None
        state = ("shared" if ref > 1 else "used") if ref else ("cached" if hashed else "free")
        out.append((b, state, ref, sorted(owners.get(b, ())), bs if hashed else filled.get(b, 0)))
    return out
