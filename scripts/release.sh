#!/usr/bin/env bash
# Prepares a release: checks that the version, the changelog and the docs are ready, runs the test
# and benchmark commands (GPU machine), regenerates the results tables and plots, and prints the
# notes for the GitHub Release (the changelog's section of that version).
#
#   scripts/release.sh VERSION               everything (needs a GPU)
#   scripts/release.sh --notes-only VERSION  the checks and the notes only (any machine)
#   scripts/release.sh --help                this usage (exit 0)
#
# Refuses (exit 1, one line per reason) when: pyproject.toml's version is not VERSION, CHANGELOG.md
# has no "## vVERSION" section or its heading marks it "(in progress)" or "(unreleased)", README.md
# or a doc under docs/ holds a placeholder (TODO, TBD, FIXME, XXX), or (full run) the tests fail or
# the regenerated tables and plots differ from what the CSVs give.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
usage() {
  echo "usage: scripts/release.sh [--notes-only] VERSION   (e.g. 1.0.0)"
  echo "  without --notes-only: checks, tests, benchmarks, results tables and plots, notes (needs a GPU)"
  echo "  --notes-only:         the checks and the release notes only (any machine)"
}
for arg in "$@"; do
  case "$arg" in -h|--help) usage; exit 0 ;; esac
done
NOTES_ONLY=0
if [ "${1:-}" = "--notes-only" ]; then NOTES_ONLY=1; shift; fi
VERSION=${1:-}
if [ -z "$VERSION" ] || [ $# -ne 1 ] || [ "${VERSION#-}" != "$VERSION" ]; then
  usage >&2
  exit 2
fi
VERSION=${VERSION#v}
PY=${PYTHON:-python3}

problems=()
declared=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -1)
[ "$declared" = "$VERSION" ] || problems+=("pyproject.toml says version $declared, not $VERSION")
# The section from "## vVERSION" up to the next "## " heading, without its heading line.
notes=$(awk -v h="## v$VERSION" '$0 == h || index($0, h " ") == 1 {on = 1; next} on && /^## / {exit} on {print}' \
  "$ROOT/CHANGELOG.md")
[ -n "$(echo "$notes" | tr -d '[:space:]')" ] || problems+=("CHANGELOG.md has no section '## v$VERSION'")
heading=$(awk -v h="## v$VERSION" '$0 == h || index($0, h " ") == 1 {print; exit}' "$ROOT/CHANGELOG.md")
if echo "$heading" | grep -qiE '\((in progress|unreleased)\)'; then
  problems+=("CHANGELOG.md marks v$VERSION as not finished: '$heading' (drop the marker when it is released)")
fi
placeholders=$(grep -rnwE "TODO|TBD|FIXME|XXX" "$ROOT/README.md" "$ROOT/docs" --include='*.md' || true)
[ -z "$placeholders" ] || problems+=("placeholders in the docs:"$'\n'"$placeholders")

if [ "$NOTES_ONLY" = 0 ] && [ ${#problems[@]} -eq 0 ]; then
  bash "$ROOT/scripts/test.sh" || problems+=("scripts/test.sh failed")
  bash "$ROOT/scripts/bench.sh" || problems+=("scripts/bench.sh failed")
  "$PY" "$ROOT/scripts/update_results.py" || problems+=("scripts/update_results.py failed")
  "$PY" "$ROOT/scripts/update_results.py" --check || problems+=("tables or plots differ from the CSVs")
fi

if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do echo "release: $p" >&2; done
  exit 1
fi
echo "# FlashKernel v$VERSION"
echo "$notes"
