"""Small helpers shared by the benchmarks: timing, JSON output and its file name, table printing.

Timing is triton.testing.do_bench (CUDA events, median of repeats after warm-up). Nothing here
knows about any kernel.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path

import torch


def median_ms(fn, warmup_ms: int = 25, rep_ms: int = 100) -> float:
    import triton
    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def median_ms_graph(fn, rep_ms: int = 100) -> float:
    """Median time of fn replayed from a CUDA graph: GPU time without Python launch overhead
    (how decode steps run in the engine)."""
    import triton
    return float(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))


def device_info() -> dict:
    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "python": platform.python_version()}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    return info


RESULTS_DIR = Path(__file__).resolve().parent / "results"

_GPU_VENDOR_WORDS = {"nvidia", "tesla", "geforce", "quadro", "amd", "radeon", "instinct"}


def device_slug(info: dict | None = None) -> str:
    """The machine part of a result file's name: the GPU's model when there is a GPU ("h100" for
    "NVIDIA H100 80GB HBM3", "a100" for "NVIDIA A100-SXM4-40GB", "rtx4090"), else "cpu<N>core"
    with N the cores this process may use ("cpu2core")."""
    info = device_info() if info is None else info
    gpu = info.get("gpu")
    if gpu:
        words = [w for w in re.split(r"[\s_-]+", gpu.lower()) if w and w not in _GPU_VENDOR_WORDS]
        model = []
        for w in words:                       # up to the first word with a digit: the model
            model.append(re.sub(r"[^a-z0-9]", "", w))
            if any(c.isdigit() for c in w):
                break
        return "".join(model) or "gpu"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu{cores or 1}core"


def result_path(name: str, where: str | os.PathLike | None = None, ext: str = ".json",
                slug: str | None = None) -> Path:
    """Where a benchmark's result goes. A `where` that is not a folder is the file itself. Otherwise
    the file is `<where, default benchmarks/results>/<name>-<device slug><ext>`: one file per
    benchmark and machine, so a rerun replaces the previous result (older runs live in git)."""
    if where and not (Path(where).is_dir() or str(where).endswith(("/", os.sep))):
        return Path(where)
    return Path(where or RESULTS_DIR) / f"{name}-{slug or device_slug()}{ext}"


def write_json(path: str | None, name: str, rows: list[dict], extra: dict | None = None) -> Path | None:
    """Write {"benchmark": name, "device": ..., "rows": rows, **extra}. `path` is a file, or a folder
    for the stable name result_path() gives; None or "" writes nothing."""
    if not path:
        return None
    info = device_info()
    out = result_path(name, path, slug=device_slug(info))
    doc = {"benchmark": name, "device": info, "rows": rows}
    if extra:
        doc.update(extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    return out


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) if rows else len(c) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths)))


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def paged_layout(ctx_lens: list[int], block_size: int, num_kv_heads: int, head_dim: int,
                 dtype, device, seed: int = 0):
    """K/V pools and block tables for sequences of the given lengths, blocks shuffled in the pool."""
    g = torch.Generator().manual_seed(seed)
    n_blocks = [(n + block_size - 1) // block_size for n in ctx_lens]
    total = sum(n_blocks)
    perm = torch.randperm(total, generator=g)
    table = torch.full((len(ctx_lens), max(n_blocks)), -1, dtype=torch.int32)
    used = 0
    for b, nb in enumerate(n_blocks):
        table[b, :nb] = perm[used:used + nb].to(torch.int32)
        used += nb
    shape = (total, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(shape, dtype=dtype, device=device)
    v_cache = torch.randn(shape, dtype=dtype, device=device)
    return k_cache, v_cache, table.to(device)
