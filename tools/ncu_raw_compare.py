"""Two ncu reports side by side, metric by metric, for the metrics that locate shared-memory and
L1 work: wavefronts and bank conflicts by operation, LSU / MIO instruction classes, local-memory
(spill) traffic, reductions, cycles. tools/gpu_profile.sh (PEERS=full) runs it on flashgen's
kernel against FA2's; session 17 found, by the summary pages alone, ~17% more L1 work per call
in the SM80 backward than in FA2's with the same instruction count.

    python3 tools/ncu_raw_compare.py ours.ncu-rep peer.ncu-rep [regex]
"""

import csv
import io
import re
import subprocess
import sys

DEFAULT = (r"l1tex__data_pipe_lsu_wavefronts|l1tex__data_bank_conflicts|l1tex__t_(requests|sectors)_pipe_lsu"
           r"|smsp__inst_executed_op_|smsp__inst_executed\.sum$|sm__inst_executed_pipe_lsu|l1tex__throughput"
           r"|smsp__average_warp|mio|lsuin|gpu__time_duration\.sum$|sm__cycles_elapsed\.avg$")


def raw_metrics(report: str) -> dict:
    text = subprocess.run(["ncu", "-i", report, "--page", "raw", "--csv"], capture_output=True, text=True,
                          check=True).stdout
    rows = list(csv.reader(io.StringIO(text)))
    return {name: (unit, value) for name, unit, value in zip(rows[0], rows[1], rows[2])}


def main(ours: str, peer: str, pattern: str = DEFAULT) -> None:
    a, b = raw_metrics(ours), raw_metrics(peer)
    wanted = re.compile(pattern)
    print(f"{'metric':78s} {'ours':>16s} {'peer':>16s} {'ours/peer':>9s}")
    for name, (unit, value) in a.items():
        if not wanted.search(name):
            continue
        other = b.get(name, ("", ""))[1]
        try:
            x, y = float(value.replace(",", "")), float(other.replace(",", ""))
        except ValueError:
            continue
        if x == 0 and y == 0:
            continue
        ratio = f"{x / y:9.2f}" if y else "        -"
        print(f"{name:78s} {value:>16s} {other:>16s} {ratio} {unit}")


if __name__ == "__main__":
    main(*sys.argv[1:])
