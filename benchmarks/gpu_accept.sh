#!/usr/bin/env bash
# The GPU check of the acceptance issue, as one script for a lent GPU machine (one H100/H200,
# under 6 minutes): `harness accept hardware=auto` on its one GPU (profile detected, health
# through NVML, real figures against the profile); report.md/html and junit.xml come back under
# $OUT. Wheels for Hydra and jsonschema travel in .whl/ (see benchmarks/gpu_check.sh).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_accept}
source "$(dirname "$0")/gpu_env.sh"
echo "=== harness accept hardware=auto (1 GPU)"
timeout 200 python3 -m harness accept hardware=auto launch.nproc=1 accept.gpus_per_node=1 "results.dir=$OUT/accept" \
  >"$OUT/accept.log" 2>&1
echo "exit $? (0 pass, 1 a check failed)"
grep -v '^\[' "$OUT/accept.log" | tail -40
for f in report.md report.html junit.xml; do cp "$OUT"/accept/*/"$f" "$OUT/$f" 2>/dev/null; done
