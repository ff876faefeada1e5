"""`playground serve` as a user runs it: a real process on a tiny GGUF file, on a free port,
with and without --engine-process, and with two data-parallel replicas. The oracle is `playground generate --json` on the same file
(greedy, the same text); Ctrl-C (SIGINT) ends the server cleanly."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from tiny_gguf import write_tiny_gguf

from llm_playground.playground import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("serve") / "tiny.gguf", seed=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("extra", [[], ["--engine-process"], ["--data-parallel", "2"]])
def test_serve_command_answers_like_generate(gguf_path, capsys, extra):
    argv = ["--model", str(gguf_path), "--dtype", "float32", "--device", "cpu", "--kv-blocks", "64"]
    assert cli.main(["generate", *argv, "--prompt", "hello there", "--max-tokens", "8", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLAYGROUND_API_KEY": "sk-x"}
    proc = subprocess.Popen([sys.executable, "-m", "llm_playground.playground.cli", "serve", *argv,
                             "--port", str(port), "--served-model-name", "tiny", "--log-level",
                             "warning", *extra], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx2.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        assert httpx2.get(base + "/v1/models").status_code == 401          # the key from the env
        r = httpx2.post(base + "/v1/completions", headers={"Authorization": "Bearer sk-x"}, timeout=60,
                        json={"model": "tiny", "prompt": "hello there", "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["text"] == want["text"]
        assert body["usage"]["completion_tokens"] == len(want["generated_ids"])
        assert body["usage"]["prompt_tokens"] == len(want["prompt_ids"])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    err = proc.stderr.read()
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err, err
