#!/usr/bin/env python3
"""One line per GPU kernel of a built library: its architecture, a hash of its SASS, its name.

A refactor of device code (a shared helper instead of a private copy, a renamed type, a moved
file) should not change the machine code. This proves it without a GPU: fingerprint the library
before and after, then compare.

    python3 scripts/sass_fingerprint.py build/libflashkernel.so > before.txt
    ... change, rebuild ...
    python3 scripts/sass_fingerprint.py build/libflashkernel.so --compare before.txt

--compare prints every kernel whose SASS changed, appeared or disappeared and exits 1 if any did.
Needs cuobjdump (from PATH, next to nvcc, or the copy that ships with Triton) and c++filt.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def find_cuobjdump() -> str:
    found = shutil.which("cuobjdump")
    if found:
        return found
    nvcc = shutil.which("nvcc")
    if nvcc and (Path(nvcc).parent / "cuobjdump").exists():
        return str(Path(nvcc).parent / "cuobjdump")
    try:
        import triton  # noqa: PLC0415 - optional: only its bundled binary is used
        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    sys.exit("sass_fingerprint: cuobjdump not found (PATH, next to nvcc, or Triton's bundled copy)")


def fingerprints(library: str) -> dict[tuple[str, str], str]:
    """{(arch, kernel): sha256 of its SASS text} for every kernel of every embedded cubin."""
    proc = subprocess.run([find_cuobjdump(), "-sass", library], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sass_fingerprint: cuobjdump -sass {library} failed: {proc.stderr.strip()}")
    # Demangled: a kernel in an anonymous namespace is mangled with a hash of its file's path, so
    # the same kernel built from another checkout would look like another kernel.
    out = subprocess.run(["c++filt"], input=proc.stdout, capture_output=True, text=True, check=True).stdout
    result: dict[tuple[str, str], str] = {}
    arch, name, body = "?", None, []

    def close() -> None:
        if name is not None:
            key = (arch, name)
            digest = hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]
            # The same kernel in two cubins of one arch (two translation units) must agree.
            if result.get(key, digest) != digest:
                digest = "conflict"
            result[key] = digest

    for line in out.splitlines():
        m = re.match(r"\s*arch = (\S+)", line)
        if m:
            close()
            arch, name, body = m.group(1), None, []
            continue
        if line.startswith("Fatbin"):
            # The next cubin's header: not part of the last kernel (hashing it made that
            # kernel "change" whenever the kernel order inside a cubin changed).
            close()
            name, body = None, []
            continue
        m = re.match(r"\s*Function : (.+?)\s*$", line)
        if m:
            close()
            name, body = m.group(1), []
            continue
        if name is not None and line.strip():
            # Runs of spaces collapsed: cuobjdump pads its columns to the widest instruction of the
            # whole cubin, so a new kernel in the same translation unit re-pads identical code.
            body.append(" ".join(line.split()))
    close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library", nargs="?", default=os.path.join("build", "libflashkernel.so"))
    ap.add_argument("--compare", metavar="FILE", help="an earlier output of this script")
    args = ap.parse_args()
    now = fingerprints(args.library)
    if not args.compare:
        for (arch, name), digest in sorted(now.items()):
            print(f"{arch} {digest} {name}")
        return 0
    before: dict[tuple[str, str], str] = {}
    for line in Path(args.compare).read_text().splitlines():
        arch, digest, name = line.split(" ", 2)
        before[(arch, name)] = digest
    changed = sorted(k for k in now.keys() & before.keys() if now[k] != before[k])
    added = sorted(now.keys() - before.keys())
    removed = sorted(before.keys() - now.keys())
    for label, keys in (("changed", changed), ("new", added), ("gone", removed)):
        for arch, name in keys:
            print(f"{label}: {arch} {name}")
    print(f"sass_fingerprint: {len(now)} kernels; {len(changed)} changed, {len(added)} new, {len(removed)} gone")
    return 1 if changed or added or removed else 0


if __name__ == "__main__":
    sys.exit(main())
