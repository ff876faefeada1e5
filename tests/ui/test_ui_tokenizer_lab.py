"""Pilot tests of the Tokenizers tab's toolbar: training a BPE in a worker, adding a SentencePiece
model, and bad corpus paths. Oracles: bpe.train / the sentencepiece library on the same input."""
from __future__ import annotations

import asyncio

from ui_helpers import make_app, wait_for

from llm_playground.playground.tokenizer_view import TokenizerPanel, TokenizerView

CORPUS = ("the quick brown fox jumps over the lazy dog. " * 40 + "\n"
          + "pack my box with five dozen liquor jugs. " * 40 + "\n") * 5


def _panel(view: TokenizerView, kind: str) -> TokenizerPanel | None:
    return next((p for p in view.query(TokenizerPanel) if p.entry.kind == kind), None)


def test_train_adds_a_tokenizer_to_the_comparison(tmp_path):
    from llm_playground import bpe

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    app = make_app()

    async def run():
        async with app.run_test(size=(140, 44)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            await pilot.press("f3")
            view = app.query_one(TokenizerView)
            view.query_one("#tok-train-files").value = str(corpus)
            view.query_one("#tok-train-vocab").value = "300"
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: _panel(view, "trained") is not None, timeout=60)
            panel = _panel(view, "trained")
            oracle = bpe.train([str(corpus)], 300, name="oracle")
            assert panel.ids == oracle.encode_ordinary(view.text())
            assert view.query_one("#tok-train-progress").progress == 1.0

    asyncio.run(run())


def test_unreadable_corpus_is_a_notification(tmp_path):
    app = make_app()

    async def run():
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.press("f3")
            view = app.query_one(TokenizerView)
            view.query_one("#tok-train-files").value = str(tmp_path / "missing.txt")
            await pilot.press("ctrl+n")
            await pilot.pause(0.2)
            assert any("cannot read" in n.message for n in app._notifications)
            view.query_one("#tok-train-files").value = str(tmp_path)       # a folder
            await pilot.press("ctrl+n")
            await pilot.pause(0.2)
            assert any("is a folder" in n.message for n in app._notifications)
            assert _panel(view, "trained") is None and app.is_running

    asyncio.run(run())


def test_sentencepiece_model_joins_the_comparison(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    prefix = tmp_path / "sp"
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=320,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   minloglevel=2)
    app = make_app()

    async def run():
        async with app.run_test(size=(140, 44)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            await pilot.press("f3")
            view = app.query_one(TokenizerView)
            view.query_one("#tok-spm-path").value = str(tmp_path / "nope.model")
            await pilot.press("ctrl+o")
            await pilot.pause(0.1)
            assert any("no file" in n.message for n in app._notifications)
            view.query_one("#tok-spm-path").value = f"{prefix}.model"
            await pilot.press("ctrl+o")
            await wait_for(pilot, lambda: _panel(view, "sentencepiece") is not None)
            panel = _panel(view, "sentencepiece")
            sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
            assert panel.ids == sp.encode(view.text(), out_type=int)
            # byte-fallback pieces are grouped back into whole characters (SentencePiece's default
            # normalisation turns newlines into spaces, so compare without whitespace)
            shown = "".join(s.text for s in panel.spans)
            assert "".join(shown.split()) == "".join(view.text().split())

    asyncio.run(run())


TRAIN_UNDER_CAPTURED_STDERR = r"""
import sys, threading
from llm_playground import bpe
import llm_playground.bpe.counting
from llm_playground.playground.tokenizer_sources import train

class Captured:                   # what Textual puts in sys.stderr: fileno() is -1
    def write(self, s): return len(s)
    def flush(self): pass
    def fileno(self): return -1

files = sys.argv[1:]
bpe.counting.PARALLEL_MIN_BYTES = 0          # use worker processes even for a small corpus
sys.stderr = Captured()
result = {}
def work():                       # the app trains in a worker thread (so spawn, not fork)
    try:
        result["tok"] = train(files, 300)
    except Exception as e:
        result["error"] = repr(e)
worker = threading.Thread(target=work)
worker.start(); worker.join()
sys.stderr = sys.__stderr__
if "error" in result:
    sys.exit(result["error"])
tok = result["tok"]
ref = bpe.train(files, 300, num_workers=1, name="trained-300")
same = [tok.id_to_bytes(i) for i in range(tok.vocab_size)] == [ref.id_to_bytes(i) for i in range(ref.vocab_size)]
print("same" if same else "different")
"""


def test_training_works_when_stderr_is_textuals_capture(tmp_path):
    """In the app, sys.stderr has no file descriptor; training on a corpus large enough for
    worker processes failed with "bad value(s) in fds_to_keep". It must train, and give the
    single-process result. A fresh interpreter, so multiprocessing's tracker is not running yet."""
    import subprocess
    import sys
    from pathlib import Path
    files = []
    for i in range(3):
        f = tmp_path / f"doc{i}.txt"
        f.write_text(f"document {i}: the quick brown fox jumps over the lazy dog. " * 200)
        files.append(str(f))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", TRAIN_UNDER_CAPTURED_STDERR, *files], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "same"


def test_a_long_tokenizer_name_does_not_cut_the_counts():
    """The panel title (name, kind, tokens, bytes, bytes/token) wraps instead of being cut at
    the panel's edge (the default model's name cut "bytes/token" at 160 columns)."""
    from llm_playground.playground.tokenizer_sources import from_bpe
    from textual.widgets import Label
    app = make_app()

    async def run():
        async with app.run_test(size=(120, 44)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            await pilot.press("f3")
            view = app.query_one(TokenizerView)
            name = "A-Very-Long-Model-Name-Instruct-v2 (Q4_K_M GGUF, 8 bits)"
            await view.add_entry(from_bpe(app.model_info.tokenizer, name, "trained"))
            await pilot.pause(0.1)
            panel = _panel(view, "trained")
            title = panel.query_one(".tok-title", Label)
            text = str(title.render())
            assert "bytes/token" in text
            assert title.outer_size.width <= panel.content_size.width      # not clipped
            lines = ["".join(s.text for s in line) for line in title.render_lines(title.region.reset_offset)]
            shown = "".join(line.strip() for line in lines)
            assert shown.replace(" ", "") == text.replace(" ", "")

    asyncio.run(run())
