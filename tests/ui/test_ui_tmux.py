"""End to end in a real terminal: tmux runs `playground` on the default model, a prompt goes in
with send-keys, and capture-pane must show a reply and a non-zero decode speed.

Slow (loads the real model on CPU) and network (the default model is fetched through pip into the
user cache on first use). Needs the tmux binary; the test says so if it is missing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]

LOAD_TIMEOUT_S = 600       # first run fetches the model wheel
REPLY_TIMEOUT_S = 240


def _playground_command() -> str:
    exe = Path(sys.executable).with_name("playground")
    return str(exe) if exe.exists() else f"{sys.executable} -m llm_playground.playground.cli"


class Tmux:
    def __init__(self) -> None:
        self.socket = f"pg-test-{uuid.uuid4().hex[:8]}"
        self.session = "pg"

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True)
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-t", self.session, "-p")

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.screen())
            if match:
                return match
            time.sleep(0.5)
        raise AssertionError(f"{pattern!r} did not appear within {timeout} s; the screen was:\n{self.screen()}")


def test_playground_chats_in_a_real_terminal():
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: `apt-get install -y tmux` (the CI script installs it)")
    tmux = Tmux()
    cwd = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    env["TERM"] = "xterm-256color"
    cmd = f"{_playground_command()} --device cpu; sleep 30"     # pinned: the default picks CUDA
    subprocess.run(["tmux", "-L", tmux.socket, "new-session", "-d", "-s", tmux.session, "-x", "140",
                    "-y", "45", cmd], check=True, cwd=cwd, env=env)
    try:
        tmux.wait_for(r"KV \d+ blocks ×", LOAD_TIMEOUT_S)               # header filled = model ready
        tmux.run("send-keys", "-t", tmux.session, "What is the capital of France?", "Enter")
        tmux.wait_for(r"out [1-9]\d* tok", REPLY_TIMEOUT_S)
        # a decode rate needs two tokens: the strip (2 Hz) may first show "out 1 tok · decode -"
        tmux.wait_for(r"decode [\d,.]+ tok/s", REPLY_TIMEOUT_S)
        # the chat column: an "assistant" label line, then the reply's first line
        reply = tmux.wait_for(r"(?m)^ {1,4}assistant +│.*\n {1,4}([^ │][^│]*?) *│", 10).group(1)
        assert re.search(r"[A-Za-z]{2,}", reply), reply
        screen = tmux.screen()
        decode = re.search(r"decode ([\d,.]+) tok/s", screen)
        assert decode and float(decode.group(1).replace(",", "")) > 0, screen
        assert "Traceback" not in screen
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)
