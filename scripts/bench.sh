#!/usr/bin/env bash
# The README's benchmark command: builds if needed, then runs the benchmark suite (all ops, or
# those named: scripts/bench.sh reduce attention), writing bench/results/<gpu>/<op>.csv and
# printing a table. Extra flags go to `flashkernel bench` (--quick, --out DIR).
source "$(dirname "$0")/common.sh"
ensure_dependencies
build_project
gpu_present || { echo "error: benchmarks need a CUDA GPU, and none is visible" >&2; exit 2; }
log "benchmarks"
"$PY" -m flashkernel bench "$@"
