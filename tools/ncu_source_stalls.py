"""Summarise an ncu source-page export: stall reasons over the whole kernel, the instructions
with the most warp samples, and those with excessive shared-memory wavefronts (bank conflicts
in their own addresses). Session 10 found the sm90 forward's misplaced P V wait this way.

On the GPU machine:
    ncu --set full --import-source no -k fwd_kernel -c 1 -o prof python3 tools/profile_fwd.py 8192 128 0
    ncu -i prof.ncu-rep --page source --csv --print-source sass > source.csv
Then, anywhere: python3 tools/ncu_source_stalls.py source.csv [top N] [reason]
(reason, e.g. mio or lg: also rank the instructions by that stall reason's samples, with the
total per opcode; session 19 found the SM80 backward's MIO stalls on its dQ reductions so.)

The excessive-wavefront columns come from the instructions' own addresses; ncu's kernel-level
l1tex__data_bank_conflicts_* counters can be far larger with no instruction at fault (session 19:
62M "conflicts" on loads with zero excessive wavefronts), so read those two apart.

Samples that no exported reason covers (e.g. waits at a wgmma's warpgroup arrive) show as the
gap between an instruction's total and its listed reasons.
"""

import collections
import csv
import sys


def _num(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def _opcode(sass: str) -> str:
    """The mnemonic of a SASS line without its predicate and modifiers ("@P0 LDSM.16.M88.4 ..." -> LDSM)."""
    words = [w for w in sass.split() if not w.startswith("@")]
    return words[0].split(".")[0] if words else ""


def rank_by_reason(col, data, base, reason: str, top: int) -> None:
    key = f"stall_{reason}"
    if key not in col:
        print(f"\nno column {key!r}")
        return
    per_op = collections.Counter()
    ranked = []
    for r in data:
        v = _num(r[col[key]])
        src = r[col["Source"]].strip()
        per_op[_opcode(src)] += v
        ranked.append((v, int(r[col["Address"]], 16) - base, src))
    ranked.sort(reverse=True)
    print(f"\n'{reason}' samples by opcode:", ", ".join(f"{op} {v:.0f}" for op, v in per_op.most_common(8)))
    print(f"top {top} instructions by '{reason}' samples:")
    for v, off, src in ranked[:top]:
        if v > 0:
            print(f"{v:8.0f} {off:#7x}  {src[:72]}")


def main(path: str, top: int = 40, reason: str = "") -> None:
    rows = list(csv.reader(open(path, newline="")))
    header = rows[1]
    col = {h: i for i, h in enumerate(header)}
    reasons = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    data = rows[2:]
    total = collections.Counter()
    for r in data:
        for h in reasons:
            total[h] += _num(r[col[h]])
    all_samples = sum(_num(r[col["Warp Stall Sampling (All Samples)"]]) for r in data)
    print(f"samples: {all_samples:.0f} (by reason: {sum(total.values()):.0f})")
    for h, v in total.most_common(12):
        print(f"  {h[6:]:22s} {v:9.0f} {100 * v / max(1.0, all_samples):5.1f}%")
    base = int(data[0][col["Address"]], 16)
    items = []
    for r in data:
        s = _num(r[col["Warp Stall Sampling (All Samples)"]])
        if s > 0:
            top3 = sorted(((_num(r[col[h]]), h) for h in reasons), reverse=True)[:3]
            items.append((s, int(r[col["Address"]], 16) - base, _num(r[col["Instructions Executed"]]),
                          r[col["Source"]].strip(), top3))
    items.sort(reverse=True)
    print(f"\ntop {top} instructions: samples, offset, executed, SASS, main reasons")
    for s, off, n, src, top3 in items[:top]:
        why = " ".join(f"{h[6:]}={v:.0f}" for v, h in top3 if v > 0)
        print(f"{s:8.0f} {off:#7x} {n:10.0f}  {src[:64]:64s} {why}")
    # Shared-memory wavefronts beyond the ideal (bank conflicts), per instruction, where the
    # export has them (ncu names: "L1 Wavefronts Shared Excessive", "... Shared Ideal").
    shared_cols = [h for h in header if "Shared" in h]
    print("\ncolumns with 'Shared':", shared_cols)
    extra = [h for h in shared_cols if "Excessive" in h]
    if extra:
        key = extra[0]
        ranked = sorted(((_num(r[col[key]]), int(r[col["Address"]], 16) - base, r[col["Source"]].strip()) for r in data),
                        reverse=True)
        print(f"\ntop instructions by '{key}' (total {sum(v for v, _, _ in ranked):.0f}):")
        for v, off, src in ranked[:top]:
            if v > 0:
                print(f"{v:12.0f} {off:#7x}  {src[:72]}")
    if reason:
        rank_by_reason(col, data, base, reason, top)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40, sys.argv[3] if len(sys.argv) > 3 else "")
