"""The remote report source: a live server's block pool, posted as the app's own messages.

`RemoteReports(url, post, api_key)` reads `GET {url}/inspect/reports` (server-sent events,
llm_playground/server/inspect_stream.py) on a thread of its own and posts what the in-process
engine worker would: `ModelReady` once (a ModelInfo without tokenizer), then `CacheUpdated` per
report (the same CacheReport / SequenceReports, rebuilt by server/report_codec.py), plus
`ServerStats` with the server's headline figures. A lost connection is an `EngineNotice` and a
retry every RETRY_S; a refused key or a URL that is no playground server is a `LoadFailed`
(one line) and the source stops. `replica=i` reads data-parallel replica i's stream
(`?replica=i`); the model event says how many the server runs (`replicas`, 1 for one engine).
Read-only: it never sends anything but the GET.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from textual.message import Message

from llm_playground.playground.messages import CacheUpdated, EngineNotice, LoadFailed, ModelReady
from llm_playground.server.report_codec import decode_info, decode_snapshot

RETRY_S = 2.0


@dataclass
class ServerStats(Message):
    """The attached server's headline figures (coalesces)."""
    stats: dict = field(default_factory=dict)
    step: int = 0

    def can_replace(self, message: Message) -> bool:
        """True for any older ServerStats (only the newest figures matter)."""
        return isinstance(message, ServerStats)


def parse_events(lines) -> Any:
    """(event name, data) per server-sent event from an iterator of text lines."""
    name, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


class RemoteReports:
    """Reads a server's inspector stream on a daemon thread; posts app messages."""

    def __init__(self, url: str, post: Callable[[Any], Any], api_key: str | None = None,
                 replica: int = 0) -> None:
        self.url = url.rstrip("/")
        self.replica = replica
        self.replicas = 1                 # the server's engine count, from its model event
        self.post = post
        self.api_key = api_key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="remote-reports", daemon=True)
        self.reports = 0
        self._ready = False

    def start(self) -> None:
        """Start the reading thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the reading thread to stop (it ends at the next event or retry)."""
        self._stop.set()

    def _run(self) -> None:
        import httpx2
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while not self._stop.is_set():
            try:
                path = "/inspect/reports" + (f"?replica={self.replica}" if self.replica else "")
                with httpx2.stream("GET", self.url + path, headers=headers,
                                   timeout=httpx2.Timeout(10.0, read=30.0)) as r:
                    if r.status_code in (401, 403, 404):
                        self.post(LoadFailed(self._refusal(r)))
                        return
                    if r.status_code != 200:
                        raise RuntimeError(f"the server answered {r.status_code}")
                    for name, data in parse_events(r.iter_lines()):
                        if self._stop.is_set():
                            return
                        self._event(name, data)
            except Exception as error:   # lost or refused connection: say so, retry
                if self._stop.is_set():
                    return
                if not self._ready:
                    self.post(LoadFailed(f"cannot reach {self.url}: {_one_line(error)} (is "
                                         "`playground serve` running there?)"))
                    return
                self.post(EngineNotice(f"lost the server at {self.url} ({_one_line(error)}); "
                                       f"retrying every {RETRY_S:g} s", "warning"))
                self._stop.wait(RETRY_S)

    def _refusal(self, r) -> str:
        try:
            msg = r.read() and json.loads(r.text)["error"]["message"]
        except Exception:
            msg = f"status {r.status_code}"
        if r.status_code == 404:
            return f"{self.url} has no inspector stream (is it `playground serve`?)"
        return f"{self.url} refused the inspector: {msg} (set PLAYGROUND_API_KEY)"

    def _event(self, name: str, data: str) -> None:
        doc = json.loads(data)
        if name == "model":
            self.replicas = int(doc.get("replicas", 1))
            if not self._ready:
                self._ready = True
                self.post(ModelReady(decode_info(doc)))
            return
        cache, seqs, running, waiting, step, stats = decode_snapshot(doc)
        self.reports += 1
        self.post(CacheUpdated(cache, seqs, running, waiting))
        self.post(ServerStats(stats, step))


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

