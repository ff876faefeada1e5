"""Server tests: the tiny random Llama of tests/engine and tests/ui on sys.path, and helpers that
start a real server (uvicorn on a free loopback port, in a thread) around a real engine."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).parents[1] / "ui"))
sys.path.insert(0, str(Path(__file__).parent))
