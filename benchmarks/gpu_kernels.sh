#!/usr/bin/env bash
# The GPU check of the fused-kernels issue, as one script for a lent GPU machine (one H100/H200,
# under 6 minutes): the kernels' CUDA tests in bf16 against the float32 reference (pytest -m gpu),
# then `harness bench kernels` at llama3-8b sizes, then a markdown table under $OUT. It also
# probes the NVML queries the acceptance health checks use (nvml_probe.txt).
#
# Hydra, omegaconf, antlr4 and jsonschema (with referencing, rpds-py, jsonschema-specifications)
# travel as wheels in .whl/ (see benchmarks/gpu_check.sh for the download line).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_kernels}
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
  | tee -a "$OUT/nvidia-smi.txt"

echo "=== kernel tests on CUDA"
timeout 150 python3 -m pytest -q -m gpu tests/kernels -p no:cacheprovider -s -o addopts="" 2>&1 | tee "$OUT/kernel_tests.log" | tail -15

echo "=== harness bench kernels (llama3-8b sizes, 4096 tokens, bf16)"
timeout 280 python3 -m harness bench kernels bench.kernel_models=[llama3-8b] bench.warmup=3 bench.iters=10 \
  launch.nproc=1 "results.dir=$OUT/results" >"$OUT/bench_kernels.log" 2>&1
echo "exit $? ($(tail -1 "$OUT/bench_kernels.log"))"

python3 - "$OUT" <<'PY' 2>&1 | tee "$OUT/nvml_probe.txt" | tail -5
import sys, pynvml as n
n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0)
def q(name, *a):
    try: print(name, getattr(n, name)(h, *a))
    except Exception as e: print(name, "ERROR", type(e).__name__, e)
for name in ("nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetSerial", "nvmlDeviceGetPersistenceMode",
             "nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth",
             "nvmlDeviceGetMaxPcieLinkWidth", "nvmlDeviceGetGpuMaxPcieLinkGeneration", "nvmlDeviceGetCurrentClocksThrottleReasons",
             "nvmlDeviceGetRemappedRows", "nvmlDeviceGetEccMode", "nvmlDeviceGetPowerManagementLimit", "nvmlDeviceGetCudaComputeCapability",
             "nvmlDeviceGetPciInfo", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetTemperature"):
    q(name) if name != "nvmlDeviceGetTemperature" else q(name, 0)
q("nvmlDeviceGetTotalEccErrors", 0, 1)  # uncorrected, volatile
q("nvmlDeviceGetTotalEccErrors", 1, 1)  # uncorrected, aggregate
q("nvmlDeviceGetRetiredPages", 1)
print("driver", n.nvmlSystemGetDriverVersion(), "cuda", n.nvmlSystemGetCudaDriverVersion())
PY

python3 - "$OUT" <<'PY' | tee "$OUT/kernels.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for rows_file in sorted(out.glob("results/*/rows.jsonl")):
    manifest = json.loads((rows_file.parent / "manifest.json").read_text())
    dev = (manifest.get("devices") or [{}])[0]
    print(f"device: {dev.get('name')}, status {manifest['status']}, run {rows_file.parent.name}\n")
    print("| op | mode | impl | time (us) | GB/s | of copy BW | TFLOP/s | vs eager | vs compile | peak mem (B) | rel. error | check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for line in rows_file.read_text().splitlines():
        r = json.loads(line)
        f = lambda k, fmt: (fmt.format(r[k]) if r.get(k) is not None else "-")
        print(f"| {r.get('op')} | {r.get('mode')} | {r.get('impl')} | {f('time_us', '{:.1f}')} | {f('gbps', '{:.0f}')} | "
              f"{f('bw_fraction', '{:.0%}')} | {f('tflops', '{:.0f}')} | {f('speedup_vs_eager', '{:.2f}x')} | "
              f"{f('speedup_vs_compile', '{:.2f}x')} | {f('peak_mem_bytes', '{:,}')} | "
              f"{f('max_rel_error', '{:.1e}')} | {'ok' if r.get('passed') else 'FAIL'} |")
PY
