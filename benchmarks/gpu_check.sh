#!/usr/bin/env bash
# The GPU checks of the foundation and microbenchmark issues, as one script for a lent GPU
# machine (one H100/H200; about 5 minutes). It writes logs, the run directories' manifests and
# a markdown summary under $OUT (default /tmp/gpu_check); copy the summary to docs/benchmarks/.
#
# The device machine has torch, triton, numpy, rich, matplotlib, psutil and nvidia-ml-py, but not
# Hydra or jsonschema: carry them as wheels in .whl/ (see the device tool's README), e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     -d .whl hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 jsonschema \
#     referencing rpds-py jsonschema-specifications attrs
# (antlr4 is a source package: build its wheel here with `pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3`).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv | tee "$OUT/nvidia-smi.txt"
R=$OUT/results
run() {  # name, then harness arguments
  local name=$1; shift
  echo "=== $name: harness $*"
  timeout 240 python3 -m harness "$@" "results.dir=$R/$name" >"$OUT/$name.log" 2>&1
  echo "exit $? ($(tail -1 "$OUT/$name.log"))"
}
# Issue 2: gemm bf16 8192^3 and all_reduce on the single GPU (world size 1).
run gemm8192 bench gemm bench.dtype=bfloat16 bench.shapes=[8192x8192x8192]
run allreduce1 bench all_reduce bench.max_bytes=1G launch.nproc=1
# Issue 3: a small bf16 and fp8 search, memory, host_link, HPL N=16384, every collective.
run gemm_search bench gemm bench.dtype=[bfloat16,float8] bench.m=4096:16384:4096 bench.n=[8192] bench.k=[8192]
run memory bench memory
run host_link bench host_link bench.max_bytes=1G
run hpl bench hpl bench.hpl_n=[16384] bench.iters=5
run collectives bench collectives bench.max_bytes=256M launch.nproc=1
timeout 120 python3 benchmarks/overhead.py --nproc 1 --bytes 256M --shape 8192x8192x8192 --dtype bfloat16 --trials 3 \
  >"$OUT/overhead.log" 2>&1
python3 - "$R" "$OUT/summary.md" <<'PY'
import json, pathlib, sys
root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
lines = ["| run | status | device | summary |", "|---|---|---|---|"]
for manifest in sorted(root.glob("*/*/manifest.json")):
    m = json.loads(manifest.read_text())
    dev = m["devices"][0] if m["devices"] else {}
    device = f"{dev.get('name')} {dev.get('uuid', '')} driver {dev.get('driver', '?')} {dev.get('memory_bytes', 0) / 2**30:.0f} GiB"
    lines.append(f"| {manifest.parent.parent.name} | {m['status']} | {device} | `{json.dumps(m.get('summary', {}))[:600]}` |")
out.write_text("\n".join(lines) + "\n")
print(out.read_text())
PY
