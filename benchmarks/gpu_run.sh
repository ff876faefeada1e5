#!/usr/bin/env bash
# One script for the device machine: GPU kernel tests, then every GPU benchmark, JSON into $OUT.
# Files are named <benchmark>-<device>.json (bench_common.result_path, e.g. throughput-h100.json) and
# the test log gpu_tests-<device>.log, so copying them into benchmarks/results/ replaces the last run.
#   bash benchmarks/gpu_run.sh [stage ...]     stages: tests prefill decode fused e2e throughput patterns chunked anatomy launches speculation
#   (no stage = all; add "sweep" to re-tune the prefill/decode tile configurations first)
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
STAGES="${*:-prefill decode fused e2e throughput patterns chunked anatomy launches speculation tests}"
SWEEP=""
case " $STAGES " in *" sweep "*) SWEEP="--sweep";; esac
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
status=0
SLUG=$($PY -c 'from benchmarks.bench_common import device_slug; print(device_slug())') || SLUG=gpu
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
if has prefill; then
  $PY benchmarks/prefill_attention.py $SWEEP --json "$OUT" || status=1
fi
if has decode; then
  $PY benchmarks/paged_decode.py $SWEEP --json "$OUT" || status=1
fi
if has fused; then
  $PY benchmarks/fused_ops.py --json "$OUT" || status=1
fi
if has e2e; then
  $PY benchmarks/e2e_decode.py --json "$OUT" || status=1
fi
if has throughput; then
  if [ -f benchmarks/throughput.py ]; then
    $PY benchmarks/throughput.py --json "$OUT" || status=1
  else
    echo "throughput: benchmarks/throughput.py not written yet"; status=1
  fi
fi
if has patterns; then
  $PY benchmarks/pattern_attention.py --json "$OUT" || status=1
fi
if has chunked; then
  $PY benchmarks/chunked_prefill.py --model smollm2-random --device cuda --json "$OUT" || status=1
fi
if has anatomy; then
  $PY benchmarks/step_anatomy.py --json "$OUT" || status=1
fi
if has launches; then
  $PY benchmarks/forward_launch_costs.py --json "$OUT" || status=1
fi
if has speculation; then
  $PY benchmarks/speculation.py --gpu --json "$OUT" || status=1
fi
if has tests; then
  timeout -s INT ${TEST_TIMEOUT:-900} $PY -m pytest -q -m gpu -p no:cacheprovider tests/kernels \
    tests/model/test_llama_gpu.py tests/model/test_real_shapes_gpu.py tests/model/test_eviction_gpu.py \
    tests/engine/test_engine_gpu.py tests/engine/test_overlap_gpu.py tests/engine/test_spec_gpu.py 2>&1 | tee "$OUT/gpu_tests-$SLUG.log" | tail -25 || status=1
fi
exit $status
