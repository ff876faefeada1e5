"""Pilot tests of the Tokenizers tab's toolbar: training a BPE in a worker, adding a SentencePiece
model, and bad corpus paths. Oracles: bpe.train / the sentencepiece library on the same input."""
from __future__ import annotations

import asyncio

from ui_helpers import make_app, wait_for

from playground.tokenizer_view import TokenizerPanel, TokenizerView

CORPUS = ("the quick brown fox jumps over the lazy dog. " * 40 + "\n"
          + "pack my box with five dozen liquor jugs. " * 40 + "\n") * 5


def _panel(view: TokenizerView, kind: str) -> TokenizerPanel | None:
    return next((p for p in view.query(TokenizerPanel) if p.entry.kind == kind), None)


def test_train_adds_a_tokenizer_to_the_comparison(tmp_path):
    import bpe

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
