"""GET /inspect/reports: the engine's block pool and queues, streamed read-only to an inspector.

Server-sent events: first `event: model` with the model description (server/report_codec.py's
`encode_info`), then a `data:` report (`encode_snapshot`: the CacheReport with every block, the
SequenceReports, running and waiting counts, and the server's headline figures) whenever the
engine has stepped since the last one, at most once per ServerConfig.report_interval_s, and a
comment line every HEARTBEAT_S while nothing changes (so a dead connection is noticed). It only
reads the snapshot the engine thread keeps (server/bridge.py): watching changes nothing, and
there is no way to send a request through it. `playground --attach URL` is its client
(playground/remote_reports.py). Protected by the API key like every route but /health.
"""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from llm_playground.server.report_codec import encode_snapshot

router = APIRouter()
HEARTBEAT_S = 5.0


def stats_of(st) -> dict:
    """The headline figures the attached inspector shows beside the pool."""
    m = st.metrics
    return {"tokens_per_second": m.tokens_per_second(), "generation_tokens": m.generation_tokens,
            "prompt_tokens": m.prompt_tokens, "finished": sum(m.finished.values()),
            "in_flight": st.bridge.in_flight, "steps": m.steps,
            "ttft_count": m.ttft.count, "ttft_mean_s": m.ttft.sum / m.ttft.count if m.ttft.count else None,
            "itl_mean_s": m.itl.sum / m.itl.count if m.itl.count else None}


@router.get("/inspect/reports")
async def reports(request: Request):
    """GET /inspect/reports: the read-only inspector stream (see the module docstring)."""
    st = request.app.state.server
    interval = st.config.report_interval_s

    async def events():
        yield b"event: model\ndata: " + json.dumps(st.info).encode() + b"\n\n"
        sent, quiet = None, 0.0
        while True:
            snap = st.bridge.latest
            if snap is not None and snap is not sent:
                sent, quiet = snap, 0.0
                doc = encode_snapshot(snap.cache, snap.sequences, snap.num_running,
                                      snap.num_waiting, snap.step, stats_of(st))
                yield b"data: " + json.dumps(doc).encode() + b"\n\n"
            elif quiet >= HEARTBEAT_S:
                quiet = 0.0
                yield b": idle\n\n"
            await asyncio.sleep(interval)
            quiet += interval

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
