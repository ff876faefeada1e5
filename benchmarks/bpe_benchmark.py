"""Tokenizer benchmark: ours vs Hugging Face tokenizers vs SentencePiece vs tiktoken.

On the pinned Debian documentation corpus (benchmarks/corpus.py), vocab 32,000, cl100k pattern:
  1. training wall time, one run each, same thread count: ours / HF tokenizers / SentencePiece;
  2. held-out bytes per token (every 20th line held out, each line encoded without its newline)
     for the three trained tokenizers and tiktoken cl100k_base;
  3. single-process encode MB/s on the held-out lines with cl100k_base ranks: ours, tiktoken,
     HF tokenizers loading our exported cl100k tokenizer.json;
  4. worst case: ours on single pieces "a" * n and " \\n" * (n/2), n = 256 KB, 512 KB, 1 MB, with
     the growth per doubling.
Prints a table with ratios against the baselines of the same run and writes JSON to
benchmarks/results/bpe_benchmark-<device>.json. `--size-mb 2` runs a small validation (written to
bpe_benchmark-2mb-<device>.json); the full run takes minutes.

Usage: python benchmarks/bpe_benchmark.py [--size-mb MB] [--vocab-size N] [--threads T]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def select_lines(corpus: Path, size_mb: float | None) -> list[str]:
    """All lines, or about `size_mb` MB taken as 200-line blocks spread evenly over the corpus."""
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    if not size_mb:
        return lines
    total = sum(len(s.encode()) for s in lines)
    keep_every = max(1, round(total / (size_mb * 1e6)))
    return [s for k in range(0, len(lines), 200) if (k // 200) % keep_every == 0
            for s in lines[k:k + 200]]


def train_hf(train_path: Path, vocab_size: int, pattern: str, specials=()):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from llm_playground.bpe.formats.hf_json import onig_pattern
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(onig_pattern(pattern)), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(specials))
    start = time.perf_counter()
    hf.train([str(train_path)], trainer)
    return hf, time.perf_counter() - start


def worst_case(tok) -> dict:
    out = {}
    for label, unit in (("a", "a"), ("space_newline", " \n")):
        times = []
        for size in (256_000, 512_000, 1_024_000):
            text = unit * (size // len(unit))
            start = time.perf_counter()
            tok.encode_ordinary(text)
            times.append(time.perf_counter() - start)
        out[label] = {"seconds": [round(t, 4) for t in times],
                      "growth_per_doubling": [round(b / a, 2) for a, b in zip(times, times[1:])]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=None, help="use about this much text")
    parser.add_argument("--vocab-size", type=int, default=32_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--corpus", type=Path, default=None, help="default: benchmarks/corpus.py")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for bpe_benchmark-<device>.json (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # HF tokenizers' thread pool
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    from llm_playground import bpe
    from llm_playground.bpe import compare, formats, patterns
    from llm_playground.bpe.reference import load_reference
    from corpus import build_corpus

    corpus = args.corpus or build_corpus()
    lines = select_lines(corpus, args.size_mb)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    result: dict = {"date": date.today().isoformat(), "machine": platform.platform(),
                    "cpus": os.cpu_count(), "threads": args.threads,
                    "vocab_size": args.vocab_size, "pattern": "cl100k"}
    with tempfile.TemporaryDirectory() as tmp:
        train_path = Path(tmp) / "train.txt"
        held, longest = compare.split_holdout(iter(["".join(lines)]), train_path)
        result["train_bytes"] = train_path.stat().st_size
        result["heldout_bytes"] = sum(len(s.encode()) for s in held)
        say(f"corpus {corpus}: train {result['train_bytes'] / 1e6:.1f} MB, "
            f"held out {result['heldout_bytes'] / 1e6:.2f} MB")

        say("training ours ...")
        start = time.perf_counter()
        ours = bpe.train([str(train_path)], args.vocab_size, pattern="cl100k",
                         num_workers=args.threads)
        train = {"ours": time.perf_counter() - start}
        say("training HF tokenizers ...")
        hf, train["hf_tokenizers"] = train_hf(train_path, args.vocab_size, patterns.CL100K)
        say("training SentencePiece ...")
        sp, train["sentencepiece"] = compare.train_sentencepiece(
            train_path, args.vocab_size, longest, args.threads, Path(tmp))

        ref, encoding = load_reference("cl100k_base")
        cl_json = Path(tmp) / "cl100k.tokenizer.json"
        formats.save(ref, cl_json, "hf")
        from tokenizers import Tokenizer as HFTokenizer
        hf_cl = HFTokenizer.from_file(str(cl_json))

        say("measuring held-out bytes per token and encode speed ...")
        quality = {
            "ours": compare.measure(ours.encode_ordinary, held),
            "hf_tokenizers": compare.measure(
                lambda s: hf.encode(s, add_special_tokens=False).ids, held),
            "sentencepiece": compare.measure(lambda s: sp.encode(s, num_threads=1), held),
            "tiktoken_cl100k": compare.measure(encoding.encode_ordinary, held),
        }
        speed = {
            "ours_cl100k": compare.measure(ref.encode_ordinary, held)["encode_mb_s"],
            "tiktoken_cl100k": quality["tiktoken_cl100k"]["encode_mb_s"],
            "hf_tokenizers_cl100k": compare.measure(
                lambda s: hf_cl.encode(s, add_special_tokens=False).ids, held)["encode_mb_s"],
        }
    say("worst cases ...")
    result.update({"train_seconds": {k: round(v, 2) for k, v in train.items()},
                   "heldout": quality, "encode_mb_s": speed, "worst_case_ours": worst_case(ref)})
    result["ratios"] = {
        "train_ours_over_hf": round(train["ours"] / train["hf_tokenizers"], 2),
        "encode_ours_over_tiktoken": round(speed["ours_cl100k"] / speed["tiktoken_cl100k"], 3),
        "encode_ours_over_hf": round(speed["ours_cl100k"] / speed["hf_tokenizers_cl100k"], 3),
        "bytes_per_token_ours_over_hf": round(quality["ours"]["bytes_per_token"]
                                              / quality["hf_tokenizers"]["bytes_per_token"], 4),
    }
    print(f"{'':24}{'train s':>10}{'bytes/token':>13}{'encode MB/s (cl100k)':>22}")
    rows = [("ours", train["ours"], quality["ours"], speed["ours_cl100k"]),
            ("HF tokenizers", train["hf_tokenizers"], quality["hf_tokenizers"],
             speed["hf_tokenizers_cl100k"]),
            ("SentencePiece", train["sentencepiece"], quality["sentencepiece"], None),
            ("tiktoken cl100k_base", None, quality["tiktoken_cl100k"], speed["tiktoken_cl100k"])]
    for name, seconds, q, mbs in rows:
        print(f"{name:24}{'-' if seconds is None else f'{seconds:.2f}':>10}"
              f"{q['bytes_per_token']:>13.3f}{'-' if mbs is None else f'{mbs:.2f}':>22}")
    for key, value in result["ratios"].items():
        print(f"{key:32}{value}")
    for label, data in result["worst_case_ours"].items():
        print(f"worst case {label:14} seconds {data['seconds']} growth/doubling "
              f"{data['growth_per_doubling']}")
    from benchmarks.bench_common import result_path
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.size_mb:g}mb" if args.size_mb else ""
    path = result_path(f"bpe_benchmark{tag}", args.out)
    path.write_text(json.dumps(result, indent=1) + "\n")
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
