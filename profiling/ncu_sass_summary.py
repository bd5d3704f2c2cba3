"""Summarizes an Nsight Compute source export of one kernel (`ncu --import R.ncu-rep --page source
--csv --print-source sass > R.csv`): executed instructions by opcode, and where the warp-stall
samples fall (by reason, with the opcodes that collected them). Used to compare kernels of the
same problem instruction by instruction (profiling/attention_sm80_vs_fa2_d128_n4096.txt).

    python3 profiling/ncu_sass_summary.py R.csv [top]"""
import collections
import csv
import re
import sys


def opcode(source: str) -> str:
    """The base opcode of a SASS line: predicate and modifiers dropped (@!P0 HMMA.16816.F32 -> HMMA)."""
    text = re.sub(r"^@!?U?P\w+\s+", "", source.strip())
    return text.split()[0].split(".")[0] if text else "?"


def summarize(path: str, top: int = 12) -> str:
    rows = list(csv.reader(open(path)))
    header = rows[1]
    src, executed = header.index("Source"), header.index("Instructions Executed")
    stall_cols = [i for i, h in enumerate(header) if h.startswith("stall_") and "Not Issued" not in h]
    mix = collections.Counter()
    stalls = collections.Counter()
    stall_ops = collections.defaultdict(collections.Counter)
    for r in rows[2:]:
        if len(r) < len(header):
            continue
        op = opcode(r[src])
        mix[op] += int(r[executed] or 0)
        for i in stall_cols:
            n = int(r[i] or 0)
            stalls[header[i]] += n
            stall_ops[header[i]][op] += n
    total, samples = sum(mix.values()), sum(stalls.values())
    out = [f"executed instructions: {total:,}", "opcode        executed   share"]
    out += [f"{op:10} {n:12,} {n / total * 100:6.1f}%" for op, n in mix.most_common(top)]
    out += ["", f"warp-stall samples: {samples:,}", "reason                  share  opcodes that collected most"]
    for reason, n in stalls.most_common(top // 2 + 2):
        ops = ", ".join(f"{op} {c / n * 100:.0f}%" for op, c in stall_ops[reason].most_common(3) if n)
        out.append(f"{reason:22} {n / samples * 100:5.1f}%  {ops}")
    return "\n".join(out)


if __name__ == "__main__":
    print(summarize(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 12))
