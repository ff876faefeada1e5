"""The last tracebacks of the `bpe` command line: a GGUF cut anywhere inside its metadata, ids or
a tokenizer.json nested 100,000 deep, SIGTERM or Ctrl-C (to the whole process group) in the
middle of `bpe train`'s worker pool. Each ends with one `bpe: ...` line and a defined exit status,
no traceback, no leaked semaphore warning, no worker left running and no output file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from llm_playground.bpe.formats import FormatError
from llm_playground.bpe.formats.gguf import read_gguf_tokenizer

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "llm_playground.bpe.cli"]


@pytest.fixture(scope="module")
def tokenizer_gguf(tmp_path_factory) -> Path:
    """A GGUF holding only tokenizer metadata (byte-level tokens, two merges, two specials)."""
    import gguf
    from llm_playground.bpe.formats.common import bytes_to_byte_level
    path = tmp_path_factory.mktemp("gguf") / "tok.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list([bytes_to_byte_level(bytes([i])) for i in range(256)]
                     + ["th", "the", "<|im_start|>", "<|im_end|>"])
    w.add_token_merges(["t h", "th e"])
    w.add_token_types([1] * 258 + [3, 3])
    w.add_string("tokenizer.chat_template", "{{ messages }}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _one_line(proc) -> str:
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err and "leaked" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_gguf_cut_anywhere_in_its_metadata_is_one_format_error(tokenizer_gguf, tmp_path):
    import gguf
    data = tokenizer_gguf.read_bytes()
    reader = gguf.GGUFReader(str(tokenizer_gguf))      # oracle: where the last key's value ends
    end = max(f.offset + sum(int(p.nbytes) for p in f.parts) for f in reader.fields.values())
    read_gguf_tokenizer(tokenizer_gguf)                        # the whole file reads
    cut_file = tmp_path / "cut.gguf"
    kinds = set()
    for cut in range(4, end, 3):
        cut_file.write_bytes(data[:cut])
        with pytest.raises(FormatError) as info:
            read_gguf_tokenizer(cut_file)
        msg = str(info.value)
        assert "\n" not in msg and str(cut_file) in msg and "larger dtype" not in msg, (cut, msg)
        kinds.add(msg.split(": ", 1)[1].split(" (")[0])
    assert any("truncated or corrupt GGUF file" in k for k in kinds), kinds


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_bpe_encode_with_a_cut_gguf_says_so(tokenizer_gguf, tmp_path, fraction):
    import gguf
    end = gguf.GGUFReader(str(tokenizer_gguf)).data_offset
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tokenizer_gguf.read_bytes()[:int(end * fraction)])
    proc = subprocess.run(CLI + ["encode", "-t", str(cut)], input=b"hello", cwd=ROOT,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == b""
    line = _one_line(proc)
    assert line.startswith("bpe: error: ") and str(cut) in line


def test_deeply_nested_json_is_one_line(tokenizer_gguf, tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text("[" * 100_000 + "]" * 100_000)
    proc = subprocess.run(CLI + ["decode", "-t", str(tokenizer_gguf), str(ids)], cwd=ROOT,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2 and "nested too deeply" in _one_line(proc)
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}")
    proc = subprocess.run(CLI + ["encode", "-t", str(tok)], input=b"hi", cwd=ROOT,
                          capture_output=True, timeout=60)
    line = _one_line(proc)
    assert proc.returncode == 2 and str(tok) in line and ("nested too deeply" in line or "JSON" in line)


def _children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    import random
    r = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "token", "merge", "pair", "count", "byte", "the"]
    path = tmp_path_factory.mktemp("corpus") / "big.txt"
    with open(path, "w") as f:
        for _ in range(300_000):
            f.write(" ".join(r.choice(words) + str(r.randrange(100)) for _ in range(8)) + "\n")
    return path


@pytest.mark.parametrize("how", ["SIGTERM", "SIGTERM to the group", "Ctrl-C to the group"])
def test_interrupting_train_ends_the_pool_cleanly(corpus, tmp_path, how):
    out = tmp_path / "out.bpe.json"
    proc = subprocess.Popen(CLI + ["train", str(corpus), "--vocab-size", "2000", "--workers", "2",
                                   "-o", str(out)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:   # the pool has started
        time.sleep(0.02)
    time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "the worker pool never started"
    sig = signal.SIGINT if "Ctrl-C" in how else signal.SIGTERM
    if "group" in how:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    line = _one_line(done)
    want = (143, "bpe: terminated") if sig == signal.SIGTERM else (130, "bpe: interrupted")
    assert (proc.returncode, line) == want, stderr.decode(errors="replace")[-3000:]
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
