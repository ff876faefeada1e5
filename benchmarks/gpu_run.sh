#!/usr/bin/env bash
# One script for the device machine: GPU kernel tests, then every GPU benchmark, JSON into $OUT.
#   bash benchmarks/gpu_run.sh [stage ...]     stages: tests prefill decode fused e2e throughput patterns chunked anatomy
#   (no stage = all; add "sweep" to re-tune the prefill/decode tile configurations first)
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
STAGES="${*:-prefill decode fused e2e throughput patterns chunked anatomy tests}"
SWEEP=""
case " $STAGES " in *" sweep "*) SWEEP="--sweep";; esac
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
if has prefill; then
  $PY benchmarks/prefill_attention.py $SWEEP --json "$OUT/prefill_attention.json" || status=1
fi
if has decode; then
  $PY benchmarks/paged_decode.py $SWEEP --json "$OUT/paged_decode.json" || status=1
fi
if has fused; then
  $PY benchmarks/fused_ops.py --json "$OUT/fused_ops.json" || status=1
fi
if has e2e; then
  $PY benchmarks/e2e_decode.py --json "$OUT/e2e_decode.json" || status=1
fi
if has throughput; then
  if [ -f benchmarks/throughput.py ]; then
    $PY benchmarks/throughput.py --json "$OUT/throughput.json" || status=1
  else
    echo "throughput: benchmarks/throughput.py not written yet"; status=1
  fi
fi
if has patterns; then
  $PY benchmarks/pattern_attention.py --json "$OUT/pattern_attention.json" || status=1
fi
if has chunked; then
  $PY benchmarks/chunked_prefill.py --model smollm2-random --device cuda --json "$OUT/chunked_prefill.json" || status=1
fi
if has anatomy; then
  $PY benchmarks/step_anatomy.py --json "$OUT/step_anatomy.json" || status=1
fi
if has tests; then
  timeout -s INT ${TEST_TIMEOUT:-900} $PY -m pytest -q -m gpu -p no:cacheprovider tests/kernels \
    tests/model/test_llama_gpu.py tests/model/test_real_shapes_gpu.py tests/model/test_eviction_gpu.py \
    tests/engine/test_engine_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25 || status=1
fi
exit $status
