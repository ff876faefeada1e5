"""Perplexity of each attention pattern on a long real text, the StreamingLLM way (paged, evicting).

The text: the GNU Coding Standards (plain-text edition) from Debian's `gnu-standards` package,
version 2022.03.23-0.1, fetched with `apt-get download` (Debian's registry through its ordinary
client), .deb and extracted text pinned by SHA-256 (below), from its first chapter on (the table
of contents is skipped). Nobody here wrote it. `--text FILE` uses another UTF-8 file instead (its
SHA-256 is recorded).

For each pattern the text runs through the model in chunks of `--chunk` tokens over the real
paged KV cache: each chunk attends to the cache under the pattern's MaskSpec, logits of every
chunk position score the next token, then blocks out of reach are freed and the kept keys
re-rotated (model/engine/eviction.py), so sliding patterns run with bounded memory and RoPE positions
bounded by sinks + window + chunk. Dense/atrous/sparse keep every block (they need text length
<= the model's trained context). Reported per pattern: perplexity over all scored tokens, over
the tokens before the window fills and after, peak blocks held, the largest RoPE position used,
and seconds.

Usage: python benchmarks/patterns_perplexity.py [--tokens 2048] [--window 256] [--stride 8]
          [--sinks 4] [--chunk 16] [--model PATH] [--text FILE] [--patterns "dense,local:256"]
Prints a table; writes benchmarks/results/patterns_perplexity-<device>.json (atomically). It does not
measure kernel speed (that is the GPU attention benchmark's job).
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_common import result_path  # noqa: E402
from llm_playground.model.network.batch import AttentionBatch  # noqa: E402
from llm_playground.model.network.kv_cache import KVCache  # noqa: E402
from llm_playground.model.engine.attention_patterns import PatternError, parse_pattern  # noqa: E402
from llm_playground.model.engine.eviction import plan_eviction, rerotate_keys, rope_offset  # noqa: E402

DEB = ("gnu-standards", "2022.03.23-0.1",
       "2087dda531c69d8505856a45e0334746f3f25211a237c95d375eed13a7d8c201")
MEMBER = "usr/share/doc/gnu-standards/standards.text.gz"
TEXT_SHA256 = "45dbac535b379e14cd79db92b3f1016345232b3b8fb4c93fa298bd9d331076c4"
START_MARK = "1 About the GNU Coding Standards"   # second occurrence: the chapter, not the TOC


@dataclass
class EvalConfig:
    tokens: int = 2048      # scored length; 8x the default window, well inside the 8k context
    window: int = 256       # W of local/sparse/streaming: small enough that the text outruns it
    stride: int = 8         # K of atrous/sparse
    sinks: int = 4          # S of streaming, as in the StreamingLLM paper
    chunk: int = 16         # tokens per forward; one block, so eviction keeps pace with the text
    block_size: int = 16    # the engine's default block size
    patterns: str = ""      # comma-free list separated by ';' or empty = the standard six

    def __post_init__(self) -> None:
        for name in ("tokens", "window", "stride", "sinks", "chunk", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.tokens < 2:
            raise ValueError("--tokens must be at least 2 (one token predicts the next)")

    def pattern_names(self) -> list[str]:
        if self.patterns:
            return [p.strip() for p in self.patterns.split(";") if p.strip()]
        w, k, s = self.window, self.stride, self.sinks
        return ["dense", f"local:{w}", f"atrous:{k}", f"sparse:{w},{k}", f"streaming:{s},{w}"]


def fetch_text(say) -> tuple[str, dict]:
    """The pinned GNU Coding Standards text, from the user cache or through apt-get download."""
    from llm_playground.bpe.wheel_fetch import cache_dir, sha256_of
    dest = cache_dir() / "patterns-text" / "gnu-standards.txt"
    if not (dest.exists() and sha256_of(dest) == TEXT_SHA256):
        dest.parent.mkdir(parents=True, exist_ok=True)
        pkg, version, deb_sha = DEB
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            say(f"fetching {pkg}={version} with apt-get download ...")
            proc = subprocess.run(["apt-get", "download", f"{pkg}={version}"], cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            debs = list(Path(tmp).glob("*.deb"))
            if proc.returncode != 0 or not debs:
                raise SystemExit(f"error: apt-get download {pkg}={version} failed "
                                 f"({proc.stderr.strip().splitlines()[-1:]}); pass --text FILE")
            if sha256_of(debs[0]) != deb_sha:
                raise SystemExit(f"error: {debs[0].name} has the wrong SHA-256; refusing it")
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True)
            data = gzip.decompress((Path(tmp) / "x" / MEMBER).read_bytes())
            if hashlib.sha256(data).hexdigest() != TEXT_SHA256:
                raise SystemExit(f"error: {MEMBER} has the wrong SHA-256; refusing it")
            part = Path(tmp) / "part"
            part.write_bytes(data)
            os.replace(part, dest)
    text = dest.read_text(encoding="utf-8")
    start = text.find(START_MARK, text.find(START_MARK) + 1)
    source = {"package": f"Debian {DEB[0]} {DEB[1]}", "deb_sha256": DEB[2], "member": MEMBER,
              "text_sha256": TEXT_SHA256, "starts_at": f"second '{START_MARK}' (char {start})"}
    return text[max(start, 0):], source


def evaluate(loaded, ids: list[int], pattern_name: str, cfg: EvalConfig) -> dict:
    """Stream ids through the paged cache under one pattern; mean NLL of every next token."""
    pattern = parse_pattern(pattern_name)
    model, mc = loaded.model, loaded.config
    bs, n_total = cfg.block_size, len(ids)
    if pattern.evicts:   # sinks' blocks + window + one chunk + the partial blocks at both ends
        num_blocks = -(-pattern.spec.sinks // bs) + -(-(pattern.spec.window + cfg.chunk) // bs) + 2
    else:
        if n_total > mc.max_position:
            return {"pattern": pattern.name, "skipped": f"needs {n_total} positions > trained "
                    f"context {mc.max_position} (only sliding patterns run past it)"}
        num_blocks = -(-n_total // bs)
    kv = KVCache(mc.num_layers, num_blocks, bs, mc.num_kv_heads, mc.head_dim, loaded.dtype,
                 loaded.device)
    free, table = list(range(num_blocks - 1, -1, -1)), []
    dev = loaded.device
    ids_t = torch.tensor(ids, dtype=torch.int64, device=dev)
    nll = torch.zeros(n_total - 1, dtype=torch.float64)       # nll[i] = -log p(ids[i+1] | ..i)
    peak, max_pos, n, t0 = 0, 0, 0, time.perf_counter()
    while n < n_total - 1:
        t = min(cfg.chunk, n_total - 1 - n)
        while len(table) * bs < n + t:
            if not free:
                raise RuntimeError(f"{pattern.name}: out of KV blocks (bound {num_blocks} too small)")
            table.append(free.pop())
        pos = torch.arange(n, n + t, device=dev) - rope_offset(table, n, bs)          # (t,)
        max_pos = max(max_pos, int(pos[-1]))
        slots = [table[p // bs] * bs + p % bs for p in range(n, n + t)]
        batch = AttentionBatch(
            positions=pos, slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            cu_seqlens_q=torch.tensor([0, t], dtype=torch.int32, device=dev),
            context_lens=torch.tensor([n + t], dtype=torch.int32, device=dev),
            block_tables=torch.tensor([table], dtype=torch.int32, device=dev),
            max_q_len=t, max_context_len=n + t, mask=pattern.spec, num_decodes=int(t == 1))
        hidden = model(ids_t[n:n + t], batch, kv)                                      # (t, H)
        logp = torch.log_softmax(model.compute_logits(hidden).double(), dim=-1)       # (t, V)
        nll[n:n + t] = -logp.gather(1, ids_t[n + 1:n + t + 1, None]).squeeze(1).cpu()
        n += t
        peak = max(peak, sum(1 for b in table if b >= 0))
        plan = plan_eviction(pattern.spec, table, n, bs)
        for i in plan.freed_logical:
            free.append(table[i])
            table[i] = -1
        for delta, blocks in plan.rerotate:
            rerotate_keys(kv, blocks, delta, model.rope_cos, model.rope_sin)
    w = cfg.window
    ppl = lambda x: float(math.exp(x.mean())) if x.numel() else float("nan")  # noqa: E731
    return {"pattern": pattern.name, "ppl": ppl(nll), "ppl_first_window": ppl(nll[:w]),
            "ppl_after_window": ppl(nll[w:]), "scored_tokens": int(nll.numel()),
            "peak_blocks": peak, "max_rope_position": max_pos,
            "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = EvalConfig()
    for name in ("tokens", "window", "stride", "sinks", "chunk", "block_size"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    ap.add_argument("--patterns", default="", help="';'-separated pattern strings (default: all)")
    ap.add_argument("--model", default=None, help="GGUF file or HF folder (default: the default model)")
    ap.add_argument("--text", default=None, help="UTF-8 text file instead of the pinned one")
    ap.add_argument("--out", default=None,
                    help="a file, or a folder for patterns_perplexity-<device>.json (default: benchmarks/results/)")
    args = ap.parse_args(argv)
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        cfg = EvalConfig(args.tokens, args.window, args.stride, args.sinks, args.chunk,
                         args.block_size, args.patterns)
        names = [parse_pattern(p).name for p in cfg.pattern_names()]
    except (ValueError, PatternError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.text:
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            print(f"error: cannot read {args.text}: {e}", file=sys.stderr)
            return 2
        source = {"file": args.text, "text_sha256": hashlib.sha256(text.encode()).hexdigest()}
    else:
        text, source = fetch_text(say)
    from llm_playground.model.weights.loader import load_model
    from llm_playground.model.network.weight_contract import ModelLoadError
    torch.set_grad_enabled(False)
    try:
        loaded = load_model(args.model, dtype="float32", progress=say)   # device: CUDA if any
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    loaded.model.ensure_positions(cfg.tokens + 1)    # it runs the network directly, not the runner
    ids = loaded.tokenizer.encode_ordinary(text)[:cfg.tokens + 1]
    if len(ids) < cfg.tokens + 1:
        print(f"error: the text has only {len(ids)} tokens, fewer than --tokens + 1", file=sys.stderr)
        return 2
    rows = []
    for name in names:
        say(f"evaluating {name} ...")
        rows.append(evaluate(loaded, ids, name, cfg))
    dense = next((r["ppl"] for r in rows if r["pattern"] == "dense" and "ppl" in r), None)
    print(f"{'pattern':<20}{'ppl':>9}{'vs dense':>10}{'ppl<W':>9}{'ppl>=W':>9}{'blocks':>8}"
          f"{'max pos':>9}{'s':>8}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['pattern']:<20} skipped: {r['skipped']}")
            continue
        rel = f"{100 * (r['ppl'] / dense - 1):+.1f}%" if dense else "-"
        print(f"{r['pattern']:<20}{r['ppl']:>9.3f}{rel:>10}{r['ppl_first_window']:>9.3f}"
              f"{r['ppl_after_window']:>9.3f}{r['peak_blocks']:>8}{r['max_rope_position']:>9}"
              f"{r['seconds']:>8.1f}")
    result = {"benchmark": "patterns_perplexity", "config": asdict(cfg), "patterns": rows,
              "model": {"name": loaded.name, "path": str(loaded.path), "dtype": "float32"},
              "text": source, "machine": {"platform": platform.platform(),
                                          "cpu_threads": torch.get_num_threads()},
              "date": datetime.date.today().isoformat()}
    out = result_path("patterns_perplexity", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.part")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
