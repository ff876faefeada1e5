"""`make bench-cpu` (benchmarks/cpu_run.sh): it runs the CPU benchmarks that exist and writes
their JSON where it says, never over the full-size results.

Found as a newcomer (issue 22): `make bench-cpu` did nothing. Oracles: the Makefile's own dry
run (`make -n`), and the JSON files the scripts write (benchmark name, rows matching the
workload asked for).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "cpu_run.sh"


def run_stages(tmp_path, *stages):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PY": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *stages], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_target_runs_the_script_into_a_folder_of_its_own():
    # Run as its own make, not a sub-make of `make test` (whose MAKEFLAGS add directory lines).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(["make", "-n", "--no-print-directory", "bench-cpu", "STAGES=kv prefix"],
                         cwd=ROOT, text=True, capture_output=True, timeout=60, env=env)
    assert dry.returncode == 0, dry.stderr
    line = dry.stdout.strip().splitlines()[-1]
    assert "benchmarks/cpu_run.sh kv prefix" in line and "OUT=benchmarks/results/small" in line
    ignored = subprocess.run(["git", "check-ignore", "-q", "benchmarks/results/small/x.json"],
                             cwd=ROOT, timeout=60)
    assert ignored.returncode == 0          # small runs are never committed over the real ones


@pytest.mark.slow
def test_kv_stage_writes_its_json(tmp_path):
    done = run_stages(tmp_path, "kv")
    assert done.returncode == 0, done.stderr[-2000:]
    files = list((tmp_path / "out").glob("kv_waste-*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["benchmark"] == "kv_waste"
    (row,) = doc["rows"]
    assert row["requests"] == 64 and 0 <= row["ours_waste_pct"] < row["reserved_waste_pct"]


def test_unknown_stage_is_refused(tmp_path):
    done = run_stages(tmp_path, "kv", "gpu-everything")
    assert done.returncode == 2 and "unknown stage 'gpu-everything'" in done.stderr
    assert not list((tmp_path / "out").glob("*.json"))
