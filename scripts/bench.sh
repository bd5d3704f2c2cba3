#!/usr/bin/env bash
# The README's benchmark command: builds if needed, then runs the benchmark suite (all ops, or
# those named: scripts/bench.sh reduce attention), writing bench/results/<gpu>/<op>.csv and
# printing a table. Extra flags go to `flashkernel bench` (--quick, --out DIR).
source "$(dirname "$0")/common.sh"
# Every results row names the commit that produced it: refuse before the build, not after it.
if [ -z "${FLASHKERNEL_COMMIT:-}" ] && [ ! -e "$ROOT/.git" ] && [ ! -f "$ROOT/.flashkernel-commit" ]; then
  echo "error: $ROOT has no .git, so the benchmarked commit is unknown. Set FLASHKERNEL_COMMIT=<sha> (the" >&2
  echo "       commit this tree was copied from), or copy the tree with scripts/export_tree.sh." >&2
  exit 2
fi
ensure_dependencies
build_project
gpu_present || { echo "error: benchmarks need a CUDA GPU, and none is visible" >&2; exit 2; }
log "benchmarks"
"$PY" -m flashkernel bench "$@"
