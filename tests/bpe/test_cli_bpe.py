"""The `bpe` command line: round trips through files, and one clear line for every bad input.

Oracles: the input file itself (decode(encode(file)) == file, byte for byte), the library API
(the CLI's ids equal `Tokenizer.encode`), and for errors: exit code 2, one line on stderr,
nothing on stdout, no output file left behind.
"""
from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from llm_playground import bpe
from llm_playground.bpe.cli import main

CORPUS = "".join((Path(sysconfig.get_paths()["stdlib"]) / n).read_text(encoding="utf-8")
                 for n in ("argparse.py", "textwrap.py"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = folder / "small.bpe.json"
    assert main(["train", str(corpus), "--vocab-size", "400", "--special", "<|endoftext|>",
                 "-o", str(out)]) == 0
    return folder, out


def run(capsysbinary, argv):
    code = main(argv)
    cap = capsysbinary.readouterr()
    return code, cap.out, cap.err.decode()


def test_train_summary_and_file(saved, capsysbinary):
    _, out = saved
    tok = bpe.load(str(out))
    assert tok.vocab_size == 400 and tok.special_tokens == {"<|endoftext|>": 399}


def test_encode_decode_round_trip_bytes_exact(saved, capsysbinary, tmp_path):
    _, out = saved
    text = "Hello\r\nworld\r\n中文 😀\n\n  tabs\t\t\x85 end"
    src = tmp_path / "in.txt"
    src.write_bytes(text.encode("utf-8"))
    code, ids_out, err = run(capsysbinary, ["encode", "-t", str(out), str(src)])
    assert code == 0, err
    ids = [int(x) for x in ids_out.split()]
    assert ids == bpe.load(str(out)).encode(text)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_bytes(ids_out)
    code, data, err = run(capsysbinary, ["decode", "-t", str(out), str(ids_file)])
    assert code == 0 and data == src.read_bytes()
    code, js, _ = run(capsysbinary, ["encode", "-t", str(out), "--json", str(src)])
    doc = json.loads(js)
    assert doc["ids"] == ids and doc["count"] == len(ids) and len(doc["tokens"]) == len(ids)
    (tmp_path / "ids.json").write_bytes(js)
    code, data, _ = run(capsysbinary, ["decode", "-t", str(out), str(tmp_path / "ids.json")])
    assert data == src.read_bytes()


def test_special_text_rule(saved, capsysbinary, tmp_path):
    _, out = saved
    src = tmp_path / "s.txt"
    src.write_text("a <|endoftext|> b")
    code, stdout, err = run(capsysbinary, ["encode", "-t", str(out), str(src)])
    assert code == 2 and stdout == b"" and err.count("\n") == 1 and "endoftext" in err
    code, stdout, _ = run(capsysbinary, ["encode", "-t", str(out), "--allow-special", "all", str(src)])
    assert 399 in [int(x) for x in stdout.split()]
    code, stdout, _ = run(capsysbinary, ["encode", "-t", str(out), "--ordinary", str(src)])
    assert 399 not in [int(x) for x in stdout.split()]
    code, stdout, err = run(capsysbinary, ["encode", "-t", str(out), "--allow-special", "<|nope|>",
                                           str(src)])
    assert code == 2 and "unknown special token" in err and stdout == b""


def test_inspect_json(saved, capsysbinary):
    _, out = saved
    code, js, _ = run(capsysbinary, ["inspect", "-t", str(out), "--token", "300", "--json"])
    doc = json.loads(js)
    tok = bpe.load(str(out))
    assert doc["stats"]["vocab_size"] == tok.vocab_size
    assert sum(doc["stats"]["length_histogram"].values()) == len(tok.vocab)

    def leaves(node):
        return [node["id"]] if not node["parts"] else [x for p in node["parts"] for x in leaves(p)]
    assert b"".join(tok.id_to_bytes(i) for i in leaves(doc["token"]["merge_tree"])) == \
        tok.id_to_bytes(300)


def _bad(folder: Path):
    binary = folder / "binary.dat"
    binary.write_bytes(b"\x7fELF\x00\x00\x01" * 100)
    invalid = folder / "invalid.txt"
    invalid.write_bytes(b"good text\n" * 50 + b"bad \xff\xfe byte\n")
    empty = folder / "empty.txt"
    empty.write_bytes(b"")
    good = folder / "good.txt"
    good.write_text(CORPUS[:20_000])
    return {"invalid_utf8": [str(invalid)], "empty": [str(empty)], "binary": [str(binary)],
            "missing": [str(folder / "nope.txt")],
            "small_vocab": [str(good), "--special", "<|a|>", "--vocab-size", "256"]}


@pytest.mark.parametrize("case", ["invalid_utf8", "empty", "binary", "missing", "small_vocab"])
def test_train_bad_input(case, tmp_path, capsysbinary):
    args = _bad(tmp_path)[case]
    out = tmp_path / "out.bpe.json"
    argv = ["train", *args, "-o", str(out)]
    if "--vocab-size" not in argv:
        argv += ["--vocab-size", "300"]
    code, stdout, err = run(capsysbinary, argv)
    assert code == 2 and stdout == b""
    errors = [line for line in err.splitlines() if line.startswith("bpe: error: ")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_invalid_utf8_replace_policy(tmp_path, capsysbinary):
    args = _bad(tmp_path)["invalid_utf8"]
    out = tmp_path / "r.bpe.json"
    code, _, err = run(capsysbinary, ["train", *args, "--vocab-size", "260",
                                      "--invalid-utf8", "replace", "-o", str(out)])
    assert code == 0 and "warning" in err and out.exists()


def test_encode_bad_input(saved, tmp_path, capsysbinary):
    _, out = saved
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff no")
    target = tmp_path / "ids.out"
    for argv in (["encode", "-t", str(out), str(bad), "-o", str(target)],
                 ["encode", "-t", str(tmp_path / "none.bpe.json"), str(bad)],
                 ["encode", "-t", str(out), str(tmp_path / "missing.txt")],
                 ["decode", "-t", str(out), str(bad)]):
        code, stdout, err = run(capsysbinary, argv)
        assert code == 2 and stdout == b"" and err.count("\n") == 1, (argv, err)
    assert not target.exists()


def test_console_script_stdin(saved):
    """stdin -> stdout through real processes, with \\r\\n kept."""
    _, out = saved
    data = "line one\r\nline two\r\n".encode()
    cmd = [sys.executable, "-m", "llm_playground.bpe.cli"]
    ids = subprocess.run(cmd + ["encode", "-t", str(out)], input=data, capture_output=True,
                         check=True).stdout
    back = subprocess.run(cmd + ["decode", "-t", str(out), "-"], input=ids, capture_output=True,
                          check=True).stdout
    assert back == data
    proc = subprocess.run(cmd + ["encode", "-t", "missing-spec"], input=data, capture_output=True)
    assert proc.returncode == 2 and proc.stdout == b"" and proc.stderr.count(b"\n") == 1


def _one_error_line(code, stdout, err):
    assert code == 2 and stdout == b"", err
    errors = [line for line in err.splitlines() if line.startswith("bpe: error: ")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err  # train: progress
    return errors[0]


def test_utf16_input_says_how_to_convert(saved, tmp_path, capsysbinary):
    """A UTF-16 file (byte-order mark) is named as such with a conversion command, for encode,
    train and compare; after that conversion, it encodes as the UTF-8 text does."""
    _, tok = saved
    text = "héllo wörld\r\nline two\n" * 30
    utf16 = tmp_path / "u16.txt"
    utf16.write_bytes(text.encode("utf-16"))
    for argv in (["encode", "-t", str(tok), str(utf16)],
                 ["train", str(utf16), "--vocab-size", "300", "-o", str(tmp_path / "o.bpe.json")],
                 ["compare", str(utf16), "--vocab-size", "300"]):
        err = _one_error_line(*run(capsysbinary, argv))
        assert "UTF-16" in err and "iconv" in err, err
    converted = tmp_path / "u8.txt"
    converted.write_bytes(utf16.read_bytes().decode("utf-16").encode("utf-8"))
    code, ids, _ = run(capsysbinary, ["encode", "-t", str(tok), str(converted)])
    assert code == 0 and bpe.load(str(tok)).decode_bytes(map(int, ids.split())) == \
        text.encode("utf-8")


def test_output_path_is_a_folder(saved, tmp_path, capsysbinary):
    """-o pointing at a folder: one line saying so, before any training, and nothing written."""
    folder, tok = saved
    corpus = folder / "corpus.txt"
    for argv in (["train", str(corpus), "--vocab-size", "300", "-o", str(tmp_path)],
                 ["encode", "-t", str(tok), str(corpus), "-o", str(tmp_path)]):
        err = _one_error_line(*run(capsysbinary, argv))
        assert "folder" in err and "Errno" not in err, err
    assert list(tmp_path.iterdir()) == [] and not any(tmp_path.parent.glob(f".{tmp_path.name}.*"))


def test_invalid_utf8_messages_name_the_fix(saved, tmp_path, capsysbinary):
    """train names the CLI flag (not the Python argument); compare names the file and offset."""
    _, tok = saved
    bad = tmp_path / "latin1.txt"
    data = "café line\n".encode("latin-1") * 40
    bad.write_bytes(data)
    err = _one_error_line(*run(capsysbinary, ["train", str(bad), "--vocab-size", "300",
                                              "-o", str(tmp_path / "o.bpe.json")]))
    assert "--invalid-utf8 replace" in err and "invalid_utf8=" not in err, err
    err = _one_error_line(*run(capsysbinary, ["compare", str(bad), "--vocab-size", "300"]))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        assert f"{bad}: invalid UTF-8 at byte {e.start}" in err, err


def test_decode_rejects_json_booleans(saved, tmp_path, capsysbinary):
    """JSON true/false are not token ids (Python would read them as 1 and 0)."""
    _, tok = saved
    ids = tmp_path / "ids.json"
    ids.write_text("[true, 1]")
    _one_error_line(*run(capsysbinary, ["decode", "-t", str(tok), str(ids)]))
    ids.write_text("[1, 0]")
    code, out, _ = run(capsysbinary, ["decode", "-t", str(tok), str(ids)])
    assert code == 0 and out == bpe.load(str(tok)).decode_bytes([1, 0])


def test_inspect_negative_longest(saved, capsysbinary):
    _, tok = saved
    _one_error_line(*run(capsysbinary, ["inspect", "-t", str(tok), "--longest", "-3"]))


def test_unknown_pattern_name_is_refused_with_the_choices(saved, tmp_path, capsysbinary):
    """`--pattern nope` was read as the regex 'nope', which matched nothing, and the error said
    'the corpus is empty'. A plain word that is no known name is now refused up front (before any
    reading), naming the known patterns and the regex: form; near misses get a suggestion."""
    folder, _ = saved
    corpus = folder / "corpus.txt"
    out = tmp_path / "o.bpe.json"
    for command in (["train", str(corpus), "--vocab-size", "300", "-o", str(out)],
                    ["compare", str(corpus), "--vocab-size", "300"]):
        err = _one_error_line(*run(capsysbinary, command + ["--pattern", "nope"]))
        assert "unknown pattern 'nope'" in err and "empty" not in err, err
        for name in ("gpt2", "cl100k", "cl100k_2023", "o200k", "smollm", "regex:nope"):
            assert name in err, (name, err)
        assert "training on" not in capsysbinary.readouterr().err.decode()
    err = _one_error_line(*run(capsysbinary, ["train", str(corpus), "--vocab-size", "300",
                                              "-o", str(out), "--pattern", "cl100k-base"]))
    assert "did you mean cl100k_base?" in err, err
    assert not out.exists()


@pytest.mark.parametrize("pattern, says", [
    ("[", "is neither a known name nor a valid regex (unterminated character set"),
    ("regex:(", "is not a valid regex (missing )"),
    ("regex:", "a regex must follow 'regex:'"),
    ("regex:nope", "matched nothing in the corpus (0 chunks in"),
    (r"\w+|\s+", "of the corpus unmatched (the first such text: '#'"),
])
def test_a_bad_or_partial_regex_is_one_line_that_says_why(saved, tmp_path, capsysbinary,
                                                          pattern, says):
    """An invalid regex, and a regex that leaves corpus text unmatched (encoding would drop that
    text), end training with one line saying what happened and what is valid."""
    folder, _ = saved
    out = tmp_path / "o.bpe.json"
    err = _one_error_line(*run(capsysbinary, ["train", str(folder / "corpus.txt"), "--vocab-size",
                                              "300", "--pattern", pattern, "-o", str(out)]))
    assert says in err and "known" in err and "cl100k" in err, err
    assert "Traceback" not in err and not out.exists()


def test_a_custom_regex_that_matches_everything_trains(saved, tmp_path, capsysbinary):
    folder, _ = saved
    corpus = folder / "corpus.txt"
    for pattern in (r"\w+|\s+|[^\w\s]+", r"regex:\w+|\s+|[^\w\s]+"):
        out = tmp_path / "custom.bpe.json"
        code, _, err = run(capsysbinary, ["train", str(corpus), "--vocab-size", "400",
                                          "--pattern", pattern, "-o", str(out)])
        assert code == 0, err
        tok = bpe.load(str(out))
        assert tok.pattern == r"\w+|\s+|[^\w\s]+"
        assert tok.decode(tok.encode_ordinary(CORPUS[:5000])) == CORPUS[:5000]


def test_help_documents_the_pattern_rule(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "gpt2 | cl100k (default) | cl100k_2023 | o200k | smollm" in text
    assert "regex:WORD" in text and "matches all of the corpus" in text


def test_inspect_token_prints_the_merge_tree_first(saved, capsysbinary):
    """Found as a newcomer (issue 22): the merge tree came after ~70 lines of statistics."""
    _, out = saved
    from llm_playground.bpe.inspect import token_report
    tok = bpe.load(str(out))
    report = token_report(tok, "300")
    code, text, _ = run(capsysbinary, ["inspect", "-t", str(out), "--token", "300"])
    lines = text.decode().splitlines()
    assert code == 0 and lines[0].startswith(f"{report['id']}  {report['token']!r}")

    def labels(node):
        return [f"{node['id']}  {node['token']!r}"] + [x for p in node["parts"] for x in labels(p)]
    tree = labels(report["merge_tree"])
    stats_at = next(k for k, line in enumerate(lines) if line.startswith("vocab size"))
    # every node of the tree is drawn above the statistics
    assert all(any(label in line for line in lines[:stats_at]) for label in tree[1:])


def test_train_summary_is_one_line_whatever_its_length(tmp_path, capsysbinary):
    """Found as a newcomer (issue 22): the summary was hard-wrapped at 80 columns mid-value."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS[:30_000], encoding="utf-8")
    deep = tmp_path / ("a-long-folder-name-" * 4)
    deep.mkdir()
    out = deep / "tokenizer-with-a-long-name.bpe.json"
    code, _, err = run(capsysbinary, ["train", str(corpus), "--vocab-size", "300", "-o", str(out)])
    assert code == 0
    saved_line = next(line for line in err.splitlines() if line.startswith("saved "))
    assert str(out) in saved_line and saved_line.endswith("of the corpus") and len(saved_line) > 150
