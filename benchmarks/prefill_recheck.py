"""Re-measure a few prefill configurations interleaved, twice, at L / N=4k causal (and S): a check
on run-to-run spread for benchmarks/prefill_attention.py's sweep. Prints TFLOP/s."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefill_attention import SHAPES, ours, sdpa, tflops  # noqa: E402

for rnd in range(2):
    for name, cfgs in (("L", [(128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 8, 3)]),
                       ("S", [(128, 64, 4, 3), (128, 128, 4, 3)])):
        shape = SHAPES[name]
        out = []
        for cfg in cfgs:
            b, ms = ours(shape, 4096, True, 16, 16384, cfg, "tma")
            out.append(f"packed{cfg}={tflops(shape, 4096, b, True, ms):.0f}")
        b, ms = ours(shape, 4096, True, 16, 16384)
        out.append(f"table={tflops(shape, 4096, b, True, ms):.0f}")
        out.append(f"sdpa={tflops(shape, 4096, b, True, sdpa(shape, 4096, True, 16384)):.0f}")
        print(f"round {rnd} {name}: " + " ".join(out), flush=True)
