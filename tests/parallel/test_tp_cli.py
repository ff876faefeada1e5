"""`playground generate --tensor-parallel 2` (the CLI spawns the ranks itself, or torchrun
starts them) prints the same JSON ids as one rank on a tiny GGUF file, float32 on the CPU; a
bad size is one line, exit 1; the app's factory builds a TP engine. Oracle: the same command
without the flag. The subprocesses run from the repository root."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm_playground.model.engine.sampling_params import SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from tiny_gguf import write_tiny_gguf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("tp") / "tiny.gguf", seed=3)


def _generate(gguf, *extra):
    cmd = [sys.executable, "-m", "llm_playground.playground.cli", "generate", "--model", str(gguf),
           "--prompt", "abcabc hello", "--max-tokens", "8", "--dtype", "float32",
           "--device", "cpu", "--json", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_generate_tp2_prints_the_one_rank_ids(gguf):
    one = _generate(gguf)
    two = _generate(gguf, "--tensor-parallel", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert b["generated_ids"] == a["generated_ids"] and len(a["generated_ids"]) > 0
    assert "starting 2 tensor-parallel ranks" in two.stderr


def test_bad_sizes_are_one_line(gguf):
    zero = _generate(gguf, "--tensor-parallel", "0")
    assert zero.returncode == 1
    assert zero.stderr.strip().splitlines()[-1] == (
        "playground: error: --tensor-parallel 0: give a rank count of at least 1")
    five = _generate(gguf, "--tensor-parallel", "5")       # 4 query heads
    assert five.returncode == 1
    assert five.stderr.strip().splitlines()[-1].startswith(
        "playground: error: tensor parallel 5: the model has only 4 query heads (sizes that work")


def test_torchrun_launch_prints_the_one_rank_ids(gguf):
    """`torchrun --nproc-per-node 2 -m llm_playground.playground.cli ... --tensor-parallel 2`:
    the environment names the ranks, rank 1 follows and exits, rank 0 prints."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.fail(f"torchrun is missing next to {sys.executable}")
    one = _generate(gguf)
    cmd = [str(torchrun), "--nproc-per-node", "2", "-m", "llm_playground.playground.cli",
           "generate", "--model", str(gguf), "--prompt", "abcabc hello", "--max-tokens", "8",
           "--dtype", "float32", "--device", "cpu", "--json", "--tensor-parallel", "2"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    docs = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(docs) == 1                          # rank 0 alone prints
    assert docs[0]["generated_ids"] == json.loads(one.stdout)["generated_ids"]


def test_the_apps_factory_builds_a_tp_engine(gguf):
    """The app's EngineFactory (playground/engine_factory.py) with --tensor-parallel 2."""
    from argparse import Namespace

    from llm_playground.playground.engine_factory import real_factory
    args = Namespace(model=str(gguf), dtype="float32", device="cpu", tensor_parallel=2)
    info, engine = real_factory(args)(lambda *a, **k: None)
    try:
        assert engine.world == 2 and info.num_heads == 4 and info.num_kv_heads == 2
        # a block over both ranks: 2 KV heads split 1 + 1, so the one-rank formula's bytes
        assert info.bytes_per_block == 2 * engine.runner.kv.bytes_per_block
        assert len(engine.generate([104, 105], SamplingParams(max_tokens=3))) == 3
    finally:
        engine.close()
