"""UI tests: put this folder (ui_helpers, tiny_engine) and tests/engine (engine_helpers, the tiny
random Llama the engine tests use) on sys.path."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).parent))
