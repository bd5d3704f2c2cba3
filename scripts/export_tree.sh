#!/usr/bin/env bash
# Copies the committed tree at HEAD (git archive: no uncommitted changes, no build folders) to DEST
# and writes DEST/.flashkernel-commit, so benchmarks run there (a machine without git, say) stamp
# their rows with the commit the code came from.   Usage: scripts/export_tree.sh DEST
set -euo pipefail
DEST=${1:?usage: scripts/export_tree.sh DEST}
cd "$(dirname "$0")/.."
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "note: uncommitted changes are not exported; DEST holds HEAD ($(git rev-parse --short=12 HEAD))" >&2
fi
mkdir -p "$DEST"
git archive --format=tar HEAD | tar -x -C "$DEST"
git rev-parse --short=12 HEAD >"$DEST/.flashkernel-commit"
echo "exported $(cat "$DEST/.flashkernel-commit") to $DEST"
