"""The header's model line, laid out for the width the header has now.

The header shows the app's name and the loaded model: name, device, dtypes and the KV cache's
size. `fit_header(info, title, width)` picks the longest of these forms that fits `width` cells,
so the KV cache's size stays on screen at any width (it is what the other tabs are about):

    LLM playground — <name> · <device> · <dtype> · KV <blocks> blocks × <size> tokens (<bytes>)
    <name> · <device> · <dtype> · KV <blocks> blocks × <size> tokens (<bytes>)
    <name> · <device> · <short dtype> · KV <bytes>
    <name> · KV <bytes>
    <name cut with …> · KV <bytes>

The app calls it again on every resize. Plain functions; no widgets.
"""
from __future__ import annotations

from rich.cells import cell_len

from llm_playground.playground.kv_view import human_bytes
from llm_playground.playground.messages import ModelInfo

SHORT_DTYPES = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
SEPARATOR = " — "          # between the app's name and the model line (Textual's own)


def short_dtype(dtype: str) -> str:
    """'int8 weights, bfloat16 KV' -> 'int8 weights, bf16 KV'."""
    for name, short in SHORT_DTYPES.items():
        dtype = dtype.replace(name, short)
    return dtype


def header_forms(info: ModelInfo) -> list[str]:
    """The model line's forms, longest first (without the app's name)."""
    total = human_bytes(info.num_blocks * info.bytes_per_block)
    full_kv = f"KV {info.num_blocks} blocks × {info.block_size} tokens ({total})"
    return [f"{info.name} · {info.device} · {info.dtype} · {full_kv}",
            f"{info.name} · {info.device} · {short_dtype(info.dtype)} · KV {total}",
            f"{info.name} · KV {total}"]


def fit_header(info: ModelInfo, title: str, width: int) -> tuple[bool, str]:
    """(show the app's name, the model line) for a header `width` cells wide: the longest form
    that fits; at the last, the model's name is cut (…) so that its KV size still shows."""
    forms = header_forms(info)
    if cell_len(title + SEPARATOR + forms[0]) <= width:
        return True, forms[0]
    for form in forms:
        if cell_len(form) <= width:
            return False, form
    tail = forms[-1][len(info.name):]          # " · KV <bytes>"
    room = max(1, width - cell_len(tail) - 1)
    return False, info.name[:room] + "…" + tail
