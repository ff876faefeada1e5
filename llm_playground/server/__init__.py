"""An OpenAI-compatible HTTP server on the project's engine (`playground serve`; docs/SERVER.md).

config.py (ServerConfig), protocol.py (request bodies), bridge.py (the engine's thread and the
asyncio request streams), routes.py and inspect_stream.py (the HTTP routes), responses.py (the
OpenAI answer and chunk shapes), errors.py (the OpenAI error shape), auth.py (the API key),
metrics.py (Prometheus text), report_codec.py (the inspector's JSON), engine_process.py (the
engine in a process of its own), dp_bridge.py and dp_metrics.py (data-parallel replicas behind
the prefix-aware router, and their /metrics), app.py (the ASGI app).
Import `llm_playground.server.app` for `build_app` / `serve` / `ServerThread` (FastAPI and uvicorn
are only needed there and in the route modules).
"""
