"""GET /inspect/reports: the engine's block pool and queues, streamed read-only to an inspector.

Server-sent events: first `event: model` with the model description (server/report_codec.py's
`encode_info`), then a `data:` report (`encode_snapshot`: the CacheReport with every block, the
SequenceReports, running and waiting counts, and the server's headline figures) whenever the
engine has stepped since the last one, at most once per ServerConfig.report_interval_s, and a
comment line every HEARTBEAT_S while nothing changes (so a dead connection is noticed). It only
reads the snapshot the engine thread keeps (server/bridge.py): watching changes nothing, and
there is no way to send a request through it. With data-parallel replicas (server/dp_bridge.py)
`?replica=i` picks whose pool and figures are streamed (default 0); the model event then says
`replica` and `replicas` (how many), so a client can offer the others. `playground --attach URL`
is its client (playground/remote_reports.py). Protected by the API key like every route but /health.
"""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from llm_playground.server.errors import APIError
from llm_playground.server.report_codec import encode_snapshot

router = APIRouter()
HEARTBEAT_S = 5.0


def stats_of(st, replica: int | None = None) -> dict:
    """The headline figures the attached inspector shows beside the pool (of one replica's
    engine and its requests, when `replica` is given)."""
    m, bridge = st.metrics, st.bridge
    if replica is not None:
        m, bridge = st.metrics.replicas[replica], st.bridge.replicas[replica]
    return {"tokens_per_second": m.tokens_per_second(), "generation_tokens": m.generation_tokens,
            "prompt_tokens": m.prompt_tokens, "finished": sum(m.finished.values()),
            "in_flight": bridge.in_flight, "steps": m.steps,
            "ttft_count": m.ttft.count, "ttft_mean_s": m.ttft.sum / m.ttft.count if m.ttft.count else None,
            "itl_mean_s": m.itl.sum / m.itl.count if m.itl.count else None}


@router.get("/inspect/reports")
async def reports(request: Request, replica: int = 0):
    """GET /inspect/reports[?replica=i]: the read-only inspector stream (module docstring)."""
    st = request.app.state.server
    interval = st.config.report_interval_s
    count = len(st.replica_info) if st.replica_info else 1
    if not 0 <= replica < count:
        raise APIError(400, f"replica: this server runs {count} engine(s): give 0..{count - 1}",
                       param="replica")
    source = st.bridge.replicas[replica] if st.replica_info else st.bridge
    info = ({**st.replica_info[replica], "replica": replica, "replicas": count}
            if st.replica_info else st.info)
    which = replica if st.replica_info else None

    async def events():
        yield b"event: model\ndata: " + json.dumps(info).encode() + b"\n\n"
        sent, quiet = None, 0.0
        while True:
            snap = source.latest
            if snap is not None and snap is not sent:
                sent, quiet = snap, 0.0
                doc = encode_snapshot(snap.cache, snap.sequences, snap.num_running,
                                      snap.num_waiting, snap.step, stats_of(st, which))
                yield b"data: " + json.dumps(doc).encode() + b"\n\n"
            elif quiet >= HEARTBEAT_S:
                quiet = 0.0
                yield b": idle\n\n"
            await asyncio.sleep(interval)
            quiet += interval

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
