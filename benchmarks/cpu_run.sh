#!/usr/bin/env bash
# The CPU benchmarks at small sizes (a few minutes on a 2-core laptop), JSON into $OUT.
#   bash benchmarks/cpu_run.sh [stage ...]    stages: decode overhead kv prefix chunked bpe serve
#   (no stage = all). `make bench-cpu` runs it with the project's venv (STAGES="kv prefix" picks).
# $OUT defaults to benchmarks/results/small/ (git-ignored), so a small run never replaces the
# full-size results in benchmarks/results/ that benchmarks/README.md cites. Each file is named
# <benchmark>-<device>.json, as the full runs' are. What each stage runs, and its size:
#   decode    cpu_decode.py on the default model (fetched once, ~93 MB): ours int8 and float32,
#             batch 1 and 4, 32 new tokens, and transformers float32 when it is installed
#   overhead  engine_overhead.py: the engine's host time per step, forward stubbed, 32 requests
#   kv        kv_waste.py: paged vs contiguous KV waste, tiny model, 64 requests
#   prefix    prefix_cache.py: prefix-cache hit rate and TTFT, n=4 sampling memory, tiny model
#   chunked   chunked_prefill.py: decode latency while a 512-token prompt arrives, tiny model
#   bpe       bpe_benchmark.py --size-mb 2, vocab 8,000: ours vs HF tokenizers, SentencePiece and
#             tiktoken; needs the pinned Debian corpus (benchmarks/corpus.py, apt-get download)
#             or BPE_CORPUS=FILE (any UTF-8 text; the JSON records its path)
#   serve     serve_load.py: 32 streaming requests through the HTTP server (its own process) vs the
#             in-process engine, tiny model, 1 torch thread per process, best of 3; needs fastapi,
#             uvicorn and httpx2 (skipped with a note when they are missing)
# The engine stages on the tiny model measure the engine's bookkeeping, not a model's speed.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/small}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}
STAGES="${*:-decode overhead kv prefix chunked bpe serve}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
for stage in $STAGES; do
  case "$stage" in decode|overhead|kv|prefix|chunked|bpe|serve) ;;
    *) echo "cpu_run.sh: unknown stage '$stage' (decode overhead kv prefix chunked bpe serve)" >&2; exit 2;;
  esac
done
status=0
run() { echo ">> $*" >&2; "$@" || { echo ">> failed: $1 $2" >&2; status=1; }; }
if has decode; then
  skip_hf=""
  $PY -c 'import transformers, accelerate' 2>/dev/null || {
    skip_hf="--skip-hf"; echo ">> transformers/accelerate not installed: no baseline row (make setup-test adds them)" >&2; }
  run $PY benchmarks/cpu_decode.py --threads "$THREADS" --new-tokens 32 --batch 4 $skip_hf --json "$OUT/"
fi
if has overhead; then
  run $PY benchmarks/engine_overhead.py --requests 32 --min-len 64 --max-len 256 --json "$OUT/"
fi
if has kv; then
  run $PY benchmarks/kv_waste.py --model tiny --requests 64 --json "$OUT/"
fi
if has prefix; then
  run $PY benchmarks/prefix_cache.py --model tiny --requests 8 --prefix 256 --own 32 --new 16 --json "$OUT/"
fi
if has chunked; then
  run $PY benchmarks/chunked_prefill.py --model tiny --device cpu --decodes 8 --prompt-len 512 \
    --budget 128 --warmup 4 --steps 16 --json "$OUT/"
fi
if has bpe; then
  if [ -n "${BPE_CORPUS:-}" ]; then
    run $PY benchmarks/bpe_benchmark.py --size-mb 2 --vocab-size 8000 --threads "$THREADS" \
      --corpus "$BPE_CORPUS" --out "$OUT"
  elif command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    run $PY benchmarks/bpe_benchmark.py --size-mb 2 --vocab-size 8000 --threads "$THREADS" --out "$OUT"
  else
    echo ">> bpe: skipped: the pinned corpus needs apt-get and dpkg-deb (Debian/Ubuntu); pass BPE_CORPUS=FILE" >&2
  fi
fi
if has serve; then
  if $PY -c 'import fastapi, uvicorn, httpx2' 2>/dev/null; then
    run $PY benchmarks/serve_load.py --model tiny --device cpu --requests 32 --min-len 16 --max-len 64 \
      --threads 1 --repeats 3 --json "$OUT/"
  else
    echo ">> serve: skipped: fastapi, uvicorn or httpx2 is not installed" >&2
  fi
fi
[ $status -eq 0 ] && echo ">> results in $OUT/" >&2
exit $status
