"""UI tests: put this folder on sys.path so the tests import scripted_engine and ui_helpers."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
