#!/usr/bin/env bash
# One command on a GPU machine: Nsight Compute counters of one launch of every kernel family
# (profiling/profile_targets.py), their roofline and its analysis.
#
#   profiling/profile_all.sh [--only a,b,...]
#
# Builds the library first if no build of it can be imported (library only, into build-profile/,
# for this GPU's arch). Then one ncu run profiles every family: the launches inside the NVTX range
# stack fk/<family>, clocks left alone (--clock-control none), the metrics of
# profiling/roofline/parse_ncu.py that this ncu and GPU know. Should that run fail or time out,
# the families it did not profile are profiled again one by one while time is left. Writes
# profiling/roofline/<gpu-slug>/{metrics.csv,kernels.csv,run.json,analysis.md,roofline_all.svg}
# (<gpu-slug>: the benchmarks' results folder name for the card) and ends with the families that
# could not be profiled and why. The raw ncu reports and CSVs stay in a temporary folder it names.
#
# Environment: NCU (the ncu binary), FK_PROFILE_BUDGET_S (seconds for all profiling, default 540),
# FK_NCU_TIMEOUT_S (the run of all families, default 360), FK_FAMILY_TIMEOUT_S (each rerun, 90),
# FLASHKERNEL_BUILD_DIR (a build to use or make); common.sh's PYTHON, FLASHKERNEL_CUDA_ARCHS, ...
ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY=${2:?--only needs a comma-separated list of families}; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (usage: profiling/profile_all.sh [--only a,b])" >&2; exit 2 ;;
  esac
done

# A build the caller named, else the usual one (build/), else this script's own. A build made
# here is the library alone (no tests, no benchmarks): quicker, and it leaves the configuration of
# the folders other scripts build into untouched.
if [ -n "${FLASHKERNEL_BUILD_DIR:-}" ]; then CANDIDATES=("$FLASHKERNEL_BUILD_DIR")
else CANDIDATES=(build build-profile); fi
export FLASHKERNEL_BUILD_DIR=${FLASHKERNEL_BUILD_DIR:-build-profile}
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../scripts/common.sh"   # sets ROOT (and cd's there), PY, BUILD, log, build_project

use_build() {  # folder -> 0 when the op library there imports and has code for this GPU
  local dir=$1
  case "$dir" in /*) ;; *) dir="$ROOT/$dir" ;; esac
  FLASHKERNEL_LIB_DIR="$dir/python/flashkernel" PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" - "$dir/python/flashkernel/_build_info.json" 2>/dev/null <<'PYEOF' || return 1
import json, re, sys
import torch
import flashkernel  # noqa: F401 - the library loads (and was built against this torch)
archs = json.load(open(sys.argv[1])).get("cuda_archs", "")
if torch.cuda.is_available():
    major, minor = torch.cuda.get_device_capability()
    cc = 10 * major + minor
    # Code for an arch runs on later GPUs of the same major version (90a: on 9.0 only).
    built = [int(a) for a in re.findall(r"\d+", archs)]
    if not any(a // 10 == major and a <= cc for a in built):
        print(f"{sys.argv[1]}: built for {archs}, not for this GPU ({major}.{minor})", file=sys.stderr)
        sys.exit(1)
PYEOF
  BUILD=$dir
}
built=
for dir in "${CANDIDATES[@]}"; do
  use_build "$dir" && { built=1; break; }
  [ -d "$dir" ] && echo "note: $dir holds no op library this torch and GPU can use"
done
if [ -z "$built" ]; then
  ensure_dependencies
  gpu_present || { echo "error: profiling needs a CUDA GPU, and none is visible" >&2; exit 2; }
  CC=$("$PY" -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability())))")
  # shellcheck disable=SC2034  # read by build_project (common.sh)
  ARCHS=${FLASHKERNEL_CUDA_ARCHS:-$([ "$CC" = 90 ] && echo 90a || echo "$CC")}
  export FLASHKERNEL_CMAKE_ARGS=${FLASHKERNEL_CMAKE_ARGS:--DFLASHKERNEL_BUILD_TESTS=OFF -DFLASHKERNEL_BUILD_BENCH=OFF}
  build_project
fi
export FLASHKERNEL_LIB_DIR="$BUILD/python/flashkernel"
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
gpu_present || { echo "error: profiling needs a CUDA GPU, and none is visible" >&2; exit 2; }

if [ -z "${NCU:-}" ]; then
  NCU=$(command -v ncu || true)
  [ -n "$NCU" ] || NCU=/usr/local/cuda/bin/ncu
fi
[ -x "$NCU" ] || { echo "error: ncu (Nsight Compute) not found; set NCU=/path/to/ncu" >&2; exit 2; }

set +e  # from here every step runs and is reported, even after a failure
TARGETS=profiling/profile_targets.py
PARSE=profiling/roofline/parse_ncu.py
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fk-profile.XXXXXX")
FAMILIES=$("$PY" "$TARGETS" --list ${ONLY:+--only "$ONLY"}) || exit 2
ALL=$(paste -sd, - <<<"$FAMILIES")
# The results folder: the benchmarks' own name for this card (bench/results/<slug>).
SLUG=$("$PY" -c "import torch; from flashkernel.bench.harness import gpu_slug
print(gpu_slug(torch.cuda.get_device_properties(torch.cuda.current_device()).name))") || exit 2
OUT=profiling/roofline/$SLUG
NCU_VERSION=$("$NCU" --version 2>/dev/null | tail -1)
log "profiling $(wc -l <<<"$FAMILIES") kernel families on $SLUG with $NCU_VERSION (work folder $TMP)"

# Only the metrics this ncu lists for this GPU: ncu refuses a whole run over one unknown name.
# Both listings (base names, and every name with its suffixes), so a metric one of them leaves out
# is not dropped for that.
{ "$NCU" --query-metrics; "$NCU" --query-metrics --query-metrics-mode all; } >"$TMP/query.txt" 2>&1
METRICS=$("$PY" "$PARSE" --print-metrics --available "$TMP/query.txt" 2>"$TMP/metrics-dropped.txt")
[ -s "$TMP/metrics-dropped.txt" ] && cat "$TMP/metrics-dropped.txt"

SECONDS=0
BUDGET=${FK_PROFILE_BUDGET_S:-540}
RAWS=() WORKS=()

# One ncu run: label, time limit (s), comma-separated families. Leaves $TMP/<label>.raw.csv (the
# raw page of the report) and $TMP/<label>.work.json; the application's lines go to the console
# (ncu's own per-kernel "==PROF==" lines only to $TMP/<label>.log).
profile() {
  local label=$1 limit=$2 fams=$3 f rc
  local -a include=()
  for f in ${fams//,/ }; do include+=(--nvtx-include "fk/$f/"); done
  # timeout signals the whole process group: ncu and the Python process it profiles. Caches are
  # flushed before every replay (ncu's default, said here): what a launch reads comes from DRAM.
  timeout --kill-after=20 "$limit" "$NCU" --clock-control none --cache-control all --nvtx "${include[@]}" \
      --metrics "$METRICS" --force-overwrite --export "$TMP/$label" \
      "$PY" "$TARGETS" --only "$fams" --work-json "$TMP/$label.work.json" 2>&1 |
    tee "$TMP/$label.log" | grep --line-buffered -v '^==PROF=='
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "ncu run '$label' stopped at its time limit (${limit}s)"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && { echo "ncu run '$label' exited with status $rc; last lines of its log:"; tail -5 "$TMP/$label.log"; }
  if [ -f "$TMP/$label.ncu-rep" ]; then
    "$NCU" --import "$TMP/$label.ncu-rep" --csv --page raw --print-units base >"$TMP/$label.raw.csv" 2>>"$TMP/$label.log"
  fi
  RAWS+=(--raw "$TMP/$label.raw.csv") WORKS+=(--work-json "$TMP/$label.work.json")
  return "$rc"
}

limit=${FK_NCU_TIMEOUT_S:-360}
[ "$limit" -gt "$BUDGET" ] && limit=$BUDGET
profile all "$limit" "$ALL"

# Families the run did not reach or did not profile (a crash, the time limit): again, one by one.
RETRY=$("$PY" "$PARSE" --unprofiled "${RAWS[@]}" "${WORKS[@]}" --expect "$ALL")
for f in $RETRY; do
  left=$((BUDGET - SECONDS))
  per=${FK_FAMILY_TIMEOUT_S:-90}
  [ "$left" -lt 30 ] && { echo "no time left to profile $f again"; continue; }
  [ "$per" -gt "$left" ] && per=$left
  log "profiling $f again on its own"
  profile "one-$f" "$per" "$f"
done

log "per-family metrics"
"$PY" "$PARSE" "${RAWS[@]}" "${WORKS[@]}" --expect "$ALL" --slug "$SLUG" --ncu-version "$NCU_VERSION"
parse_rc=$?
log "roofline and analysis"
"$PY" profiling/roofline/generate_roofline.py --slug "$SLUG"
plot_rc=$?

echo
echo "profiled in ${SECONDS}s on $SLUG; results in $OUT; ncu reports, raw CSVs and logs in $TMP"
"$PY" - "$OUT/run.json" <<'PYEOF'
import json, sys
try:
    run = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit("no run.json: nothing was parsed")
missing = run.get("not_profiled") or {}
print(f"families not profiled: {len(missing)}")
for name, why in missing.items():
    print(f"  {name}: {why}")
if run.get("measures_missing"):
    print("not measured (none of their metrics in the report): " + ", ".join(run["measures_missing"]))
PYEOF
[ "$parse_rc" -eq 0 ] && [ "$plot_rc" -eq 0 ]
