"""Loops of a SASS listing (`cuobjdump --dump-sass lib.so > x.sass`) with their instruction mix,
and the order of the waits, shuffles and barriers in the first wgmma loop: the quick check that
ptxas kept a kernel's schedule (e.g. that WARPGROUP.DEPBAR for O += P V follows the softmax).

    python3 tools/sass_loops.py x.sass            # every loop with HGMMA/QGMMA or > 200 instructions
    python3 tools/sass_loops.py x.sass --order    # plus the event order after the first gsb0 wait
Works on a single-kernel object too (nvcc -c ... -o k.o; cuobjdump --dump-sass k.o).
"""

import collections
import re
import sys

KEYS = ("HGMMA", "QGMMA", "LDL", "STL", "MUFU", "FFMA", "FMUL", "FMNMX", "BAR", "R2UR", "SHFL")


def parse(path):
    ins = []
    for line in open(path):
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s*(.*?);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2)))
    return ins


def opcode(text):
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def loops(ins):
    where = {a: i for i, (a, _) in enumerate(ins)}
    for i, (a, t) in enumerate(ins):
        m = re.search(r"BRA\s.*?(0x[0-9a-f]+)", t)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in where:
            body = ins[where[int(m.group(1), 16)]: i + 1]
            mix = collections.Counter(opcode(x[1]) for x in body)
            if mix["HGMMA"] or mix["QGMMA"] or len(body) > 200:
                yield body[0][0], a, len(body), mix


def order(ins, span=900):
    start = next((i for i, (_, t) in enumerate(ins) if "DEPBAR.LE gsb0, 0x1" in t), None)
    if start is None:
        return
    last = None
    for a, t in ins[start: start + span]:
        op = opcode(t)
        if any(k in t for k in ("DEPBAR", "SHFL", "VOTE", "BAR.SYNC", "BAR.ARV", "SYNCS.ARRIVE", "BRA")):
            print(f"  {a:#7x} {t[:70]}")
            last = None
        elif op in ("MUFU", "HGMMA", "QGMMA", "STS") and op != last:
            print(f"  {a:#7x} {t[:50]} ...")
            last = op


def main(argv):
    ins = parse(argv[0])
    for lo, hi, n, mix in loops(ins):
        print(f"loop {lo:#x}-{hi:#x}: {n} instructions, " + ", ".join(f"{k} {mix[k]}" for k in KEYS if mix[k]))
    if "--order" in argv:
        print("order after the first 'WARPGROUP.DEPBAR.LE gsb0, 0x1':")
        order(ins)


if __name__ == "__main__":
    main(sys.argv[1:])
