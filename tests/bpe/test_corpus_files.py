"""Corpus arguments: each file once, and a glob after a folder applies inside that folder.

Found as a newcomer (issue 22): `bpe train . "*.txt"` said "6 file(s), 13.6 MB" for 3 files (the
folder gave every file and the glob, resolved against the working directory, gave them again).
Oracles: the files written into a temporary folder (which ones, their byte sizes on disk), and
for training, `bpe.train` on the deduplicated file list given explicitly.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from llm_playground import bpe
from llm_playground.bpe.cli import main
from llm_playground.bpe.corpus_files import CorpusError, expand_inputs


@pytest.fixture
def tree(tmp_path):
    """corpus/a.txt, corpus/b.txt, corpus/notes.md, corpus/sub/c.txt, corpus/sub/d.md,
    corpus/.hidden/e.txt; and w/x.txt, a working directory with a .txt file of its own."""
    root = tmp_path / "corpus"
    texts = {"a.txt": "alpha beta gamma\n" * 40, "b.txt": "beta delta\n" * 70,
             "notes.md": "# notes\nsome markdown here\n" * 30, "sub/c.txt": "gamma c c\n" * 55,
             "sub/d.md": "## deep\n" * 20, ".hidden/e.txt": "hidden\n" * 10}
    for name, text in texts.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "x.txt").write_text("working directory file\n" * 9)
    return root


def names(files, root):
    return [str(Path(f).resolve().relative_to(root.resolve())) for f in files]


def test_a_glob_after_a_folder_applies_inside_it(tree, monkeypatch):
    monkeypatch.chdir(tree.parent / "w")      # the cwd holds x.txt: it must not come in
    assert names(expand_inputs([str(tree), "*.txt"]), tree) == ["a.txt", "b.txt", "sub/c.txt"]
    assert names(expand_inputs([str(tree), "*.md", "*.txt"]), tree) == [
        "notes.md", "sub/d.md", "a.txt", "b.txt", "sub/c.txt"]
    assert names(expand_inputs([str(tree), "sub/*"]), tree) == ["sub/c.txt", "sub/d.md"]


def test_a_folder_alone_gives_every_visible_file(tree):
    assert names(expand_inputs([str(tree)]), tree) == [
        "a.txt", "b.txt", "notes.md", "sub/c.txt", "sub/d.md"]


def test_a_glob_not_after_a_folder_is_resolved_in_the_working_directory(tree, monkeypatch):
    monkeypatch.chdir(tree.parent / "w")
    assert expand_inputs(["*.txt"]) == [Path("x.txt")]
    # after a file, a glob is the shell's again
    assert [p.name for p in expand_inputs([str(tree / "a.txt"), "*.txt"])] == ["a.txt", "x.txt"]


def test_each_file_once_whatever_names_it(tree, monkeypatch):
    monkeypatch.chdir(tree)
    overlapping = expand_inputs([".", "*.txt", "a*", "sub/*.txt"])      # a.txt matches two globs
    assert names(overlapping, tree) == ["a.txt", "b.txt", "sub/c.txt"]
    spelled_twice = expand_inputs(["a.txt", "./a.txt", str(tree / "a.txt"), "sub/../a.txt", "sub"])
    assert names(spelled_twice, tree) == ["a.txt", "sub/c.txt", "sub/d.md"]


@pytest.mark.parametrize("args,needle", [
    (["{root}", "*.rst"], "no file in folder {root} matches *.rst"),
    (["{root}/nope"], "no such file or folder"),
    (["{root}/.hidden/*.none"], "no file matches"),
])
def test_nothing_matched_is_one_clear_error(tree, args, needle):
    with pytest.raises(CorpusError, match=re.escape(needle.format(root=tree))):
        expand_inputs([a.format(root=tree) for a in args])


def test_bpe_train_counts_files_and_bytes_once(tree, tmp_path, capsysbinary, monkeypatch):
    monkeypatch.chdir(tree)
    out = tmp_path / "t.bpe.json"
    # `.` then two overlapping globs, as a newcomer types it
    assert main(["train", ".", "*.txt", "a*", "--vocab-size", "270", "-o", str(out)]) == 0
    err = capsysbinary.readouterr().err.decode()
    unique = [tree / "a.txt", tree / "b.txt", tree / "sub" / "c.txt"]
    size = sum(os.path.getsize(f) for f in unique)
    from llm_playground.bpe.cli_io import file_size_text
    assert f"training on 3 file(s), {file_size_text(size)}," in err, err
    want = bpe.train([str(f) for f in unique], 270)
    got = bpe.load(str(out))
    assert got.vocab == want.vocab        # trained on those three files, each once


def test_library_train_reads_a_folder_glob_the_same_way(tree, monkeypatch):
    monkeypatch.chdir(tree.parent / "w")
    unique = [tree / "a.txt", tree / "b.txt", tree / "sub" / "c.txt"]
    assert (bpe.train([str(tree), "*.txt", "*.txt"], 270).vocab
            == bpe.train([str(f) for f in unique], 270).vocab)
