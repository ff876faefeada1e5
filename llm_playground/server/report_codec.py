"""The inspector's wire format: engine snapshots as JSON-able dicts, and back.

`encode_snapshot` turns what the server's engine thread kept after a step (a CacheReport, the
SequenceReports, the queue lengths: model/engine/reports.py) and the server's headline figures
into plain dicts and lists; a block is a 5-list [id, state, ref_count, owners, num_tokens] so a
pool of thousands of blocks stays a few tens of KB. `decode_snapshot` rebuilds the same
dataclasses on the client (playground/remote_reports.py), so the KV view draws a remote pool
exactly as a local one. `encode_info` / `decode_info` do the same for the model description
(playground/messages.ModelInfo, without the tokenizer object: the client gets none). Imports no
web framework, so the client side needs none.
"""
from __future__ import annotations

from dataclasses import fields

from llm_playground.model.engine.reports import BlockInfo, CacheReport, SequenceReport

_CACHE_FIELDS = [f.name for f in fields(CacheReport) if f.name != "blocks"]
_SEQ_FIELDS = [f.name for f in fields(SequenceReport)]
INFO_FIELDS = ("name", "path", "device", "dtype", "dtype_bytes", "num_layers", "num_heads",
               "num_kv_heads", "head_dim", "max_position", "num_blocks", "block_size",
               "bytes_per_block", "pattern")


def encode_snapshot(cache: CacheReport, sequences: list[SequenceReport], num_running: int,
                    num_waiting: int, step: int, stats: dict | None = None) -> dict:
    """One inspector report as plain data."""
    return {"step": step, "num_running": num_running, "num_waiting": num_waiting,
            "cache": {**{k: getattr(cache, k) for k in _CACHE_FIELDS},
                      "blocks": [[b.block_id, b.state, b.ref_count, list(b.owners), b.num_tokens]
                                 for b in cache.blocks]},
            "sequences": [[getattr(s, k) for k in _SEQ_FIELDS] for s in sequences],
            "stats": dict(stats or {})}


def decode_snapshot(doc: dict) -> tuple[CacheReport, list[SequenceReport], int, int, int, dict]:
    """(cache, sequences, running, waiting, step, stats) from `encode_snapshot`'s dict; a
    missing or mistyped field raises ValueError naming it."""
    try:
        c = doc["cache"]
        blocks = [BlockInfo(int(b[0]), str(b[1]), int(b[2]), [int(o) for o in b[3]], int(b[4]))
                  for b in c["blocks"]]
        cache = CacheReport(**{k: c[k] for k in _CACHE_FIELDS}, blocks=blocks)
        seqs = [SequenceReport(*row) for row in doc["sequences"]]
        return (cache, seqs, int(doc["num_running"]), int(doc["num_waiting"]), int(doc["step"]),
                dict(doc.get("stats") or {}))
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"inspector report: bad or missing field ({type(e).__name__}: {e})") from None


def encode_info(info) -> dict:
    """A ModelInfo (or anything with its fields) as plain data, without the tokenizer."""
    return {k: getattr(info, k) for k in INFO_FIELDS}


def decode_info(doc: dict):
    """The ModelInfo of `encode_info`'s dict (tokenizer None, chat template None)."""
    from llm_playground.playground.messages import ModelInfo
    try:
        return ModelInfo(**{k: doc[k] for k in INFO_FIELDS}, tokenizer=None, chat_template=None)
    except (KeyError, TypeError) as e:
        raise ValueError(f"inspector model description: bad or missing field ({e})") from None
