"""End-to-end decode speed, batch 1: our runtime (Triton kernels + CUDA graphs) vs transformers.

Random weights of SmolLM2-135M shapes and Llama-3-8B shapes, bf16, one 32-token random prompt,
256 new greedy tokens. Both runtimes hold the same weights (ours is filled from the transformers
model's state dict). Ours: eager prefill through model.forward, then each decode step replays
the captured graph (model/engine/cuda_graphs.py); the next token is the device-side argmax, fed back
without a host sync; the per-step batch tensors are precomputed on the device. transformers:
`generate(do_sample=False)` eager. Also reported: the weight-bandwidth floor (weight bytes /
copy bandwidth) and the agreement of the first greedy tokens of the two runtimes. "ours_unfused"
is ours with the fused norm/SwiGLU + projection kernels (kernels/fused_linear.py) turned off,
the layer as it was before them; `--profile` prints the kernels of one replayed decode step.

    python benchmarks/e2e_decode.py [--json out.json] [--models smollm2 llama8b] [--new 256]
                                    [--profile]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import print_table, write_json  # noqa: E402
from llm_playground.model.network.batch import AttentionBatch  # noqa: E402
from llm_playground.model.network.config import ModelConfig  # noqa: E402
from llm_playground.model.network.kv_cache import KVCache  # noqa: E402
from llm_playground.model.network.llama import LlamaForCausalLM  # noqa: E402

MODELS = {
    "smollm2": ModelConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                           num_heads=9, num_kv_heads=3, head_dim=64, max_position=8192,
                           rope_theta=100000.0, tie_word_embeddings=True),
    "llama8b": ModelConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                           num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
                           max_position=8192, rope_theta=500000.0),
}


def hf_model(cfg: ModelConfig, dtype, device):
    from transformers import LlamaConfig, LlamaForCausalLM as HFLlama
    hc = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                     intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                     num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                     head_dim=cfg.head_dim, max_position_embeddings=cfg.max_position,
                     rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
                     tie_word_embeddings=cfg.tie_word_embeddings, eos_token_id=None,
                     bos_token_id=None, pad_token_id=0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            m = HFLlama(hc)
    finally:
        torch.set_default_dtype(old)
    with torch.no_grad():   # norms at 1 (their init), the rest N(0, 0.02): sane activations
        for name, p in m.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.02)
    return m.eval()


def ours_from(hf, cfg: ModelConfig, dtype, device) -> LlamaForCausalLM:
    sd = hf.state_dict()
    m = LlamaForCausalLM(cfg, dtype, device)
    m.load_weights(lambda name: sd[name])
    return m.eval()


@torch.inference_mode()
def run_ours(model, cfg, prompt, new_tokens, device, block_size=16, use_graphs=True,
             profile=False):
    P = prompt.shape[0]
    total = P + new_tokens
    n_blocks = -(-total // block_size)
    kv = KVCache(cfg.num_layers, n_blocks + 1, block_size, cfg.num_kv_heads, cfg.head_dim,
                 model.dtype, device)
    perm = torch.randperm(n_blocks + 1)[:n_blocks].to(torch.int32)            # scattered blocks
    table = perm.to(device)[None]                                             # (1, n_blocks)
    slots_all = (table[0].long()[:, None] * block_size
                 + torch.arange(block_size, device=device)[None]).reshape(-1)[:total]  # (total,)
    i32 = lambda *x: torch.tensor(x, dtype=torch.int32, device=device)  # noqa: E731
    prefill = AttentionBatch(positions=torch.arange(P, device=device), slot_mapping=slots_all[:P],
                             cu_seqlens_q=i32(0, P), context_lens=i32(P), block_tables=table,
                             max_q_len=P, max_context_len=P, num_decodes=0)
    pos_all = torch.arange(total, device=device)
    ctx_all = torch.arange(1, total + 1, dtype=torch.int32, device=device)
    cu1 = i32(0, 1)
    runner = None
    if use_graphs and device != "cpu":
        from llm_playground.model.engine.cuda_graphs import DecodeGraphRunner
        runner = DecodeGraphRunner(model, kv, max_num_seqs=1, max_blocks_per_seq=n_blocks)
        runner.capture_all(prefill.mask)
    out = torch.empty(new_tokens, dtype=torch.int64, device=device)

    def step_batch(i):  # the decode step producing token i+1 reads position P + i
        p = P + i
        return AttentionBatch(positions=pos_all[p:p + 1], slot_mapping=slots_all[p:p + 1],
                              cu_seqlens_q=cu1, context_lens=ctx_all[p:p + 1], block_tables=table,
                              max_q_len=1, max_context_len=p + 1, num_decodes=1)

    def generate():
        hidden = model(prompt, prefill, kv)
        tok = model.compute_logits(hidden[-1:]).argmax(-1)                    # (1,)
        out[0:1] = tok
        for i in range(new_tokens - 1):
            b = step_batch(i)
            logits = runner.run(tok, b) if runner else model.compute_logits(model(tok, b, kv))
            tok = logits.argmax(-1)
            out[i + 1:i + 2] = tok
        return out

    generate()                                                                # warm-up
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    generate()
    if device != "cpu":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if profile and runner is not None:
        profile_step(lambda: runner.run(out[:1], step_batch(0)))
    return new_tokens / dt, out.tolist()


def profile_step(step, reps: int = 20) -> None:
    """Kernels of `reps` replays of one decode step (CUPTI sees the kernels inside graphs)."""
    from torch.profiler import ProfilerActivity, profile
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name[:70], []).append(e.device_time)
    gpu_us = sum(sum(v) for v in by_name.values()) / reps
    print(f"profile: {len(kernels) / reps:.0f} kernels per step, {gpu_us:.0f} us of kernel "
          "time per step")
    for name, times in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:14]:
        print(f"  {len(times) / reps:6.1f} x {sum(times) / len(times):7.2f} us  {name}")


@torch.inference_mode()
def run_hf(hf, prompt, new_tokens, device):
    ids = prompt[None]
    kw = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
              eos_token_id=None, pad_token_id=0)
    hf.generate(ids, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})    # warm-up
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    seq = hf.generate(ids, **kw)
    if device != "cpu":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return new_tokens / dt, seq[0, ids.shape[1]:].tolist()


def weight_bytes(m) -> int:
    seen, total = set(), 0
    for p in m.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--hf-new", type=int, default=64, help="tokens for the (slow) transformers run")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny 2-layer run on CPU (no graphs)")
    ap.add_argument("--profile", action="store_true", help="print one decode step's kernels")
    args = ap.parse_args(argv)
    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("e2e_decode: needs a CUDA GPU (or --cpu-smoke)", file=sys.stderr)
        return 2
    dtype = torch.float32 if args.cpu_smoke else torch.bfloat16
    rows = []
    for name in args.models:
        cfg = MODELS[name]
        if args.cpu_smoke:
            import dataclasses
            cfg = dataclasses.replace(cfg, num_layers=2, vocab_size=1000)
        torch.manual_seed(0)
        hf = hf_model(cfg, dtype, device)
        ours = ours_from(hf, cfg, dtype, device)
        prompt = torch.randint(0, cfg.vocab_size, (32,), device=device)
        ours_tps, ours_ids = run_ours(ours, cfg, prompt, args.new, device,
                                      profile=args.profile)
        from llm_playground.kernels import dispatch
        dispatch.set_fused_linear(False)
        try:
            unfused_tps, unfused_ids = run_ours(ours, cfg, prompt, args.new, device,
                                                profile=args.profile)
        finally:
            dispatch.set_fused_linear(True)
        hf_tps, hf_ids = run_hf(hf, prompt, args.hf_new, device)
        same = next((i for i, (a, b) in enumerate(zip(ours_ids, hf_ids)) if a != b),
                    min(len(ours_ids), len(hf_ids)))
        wb = weight_bytes(ours)
        same_unfused = next((i for i, (a, b) in enumerate(zip(ours_ids, unfused_ids)) if a != b),
                            len(ours_ids))
        row = {"model": name, "ours_tok_s": ours_tps, "ours_unfused_tok_s": unfused_tps,
               "hf_tok_s": hf_tps, "speedup": ours_tps / hf_tps,
               "fused_vs_unfused": ours_tps / unfused_tps,
               "fused_unfused_equal_prefix": same_unfused, "weight_GB": wb / 1e9,
               "floor_tok_s_at_3TBps": 3.0e12 / wb, "greedy_tokens_equal_prefix": same,
               "new_tokens_ours": args.new, "new_tokens_hf": args.hf_new}
        row["fraction_of_floor"] = ours_tps / row["floor_tok_s_at_3TBps"]
        rows.append(row)
        print(row, flush=True)
        del hf, ours
        if device == "cuda":
            torch.cuda.empty_cache()
    print_table(rows, ["model", "ours_tok_s", "ours_unfused_tok_s", "fused_vs_unfused",
                       "hf_tok_s", "speedup", "weight_GB",
                       "floor_tok_s_at_3TBps", "fraction_of_floor", "greedy_tokens_equal_prefix"])
    write_json(args.json, "e2e_decode", rows, {"unit": "tokens/s, batch 1, bf16, greedy"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
