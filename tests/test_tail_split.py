"""The Hopper backward's tail split (kernels/common/bwd_tail_split.h) on the host: the plan is
the least makespan of the model (recomputed here), and the grid's CTAs map onto every whole key
block and every (split block, piece) once, the pieces' step ranges tiling the block's steps.
tests/cpp/tail_split_check.cpp compiled with nvcc; no GPU."""

import math

from host_program import run_check

OVERHEAD = 2  # kTailPieceOverheadSteps
SMS = 132


def _plans(tmp_path, triples):
    out = run_check(tmp_path, "tail_split_check.cpp", "".join(f"{c} {s} {n}\n" for c, s, n in triples))
    rows = [line.split() for line in out.strip().splitlines()]
    assert len(rows) == len(triples)
    assert all(row[3:] == ["map", "ok"] for row in rows), [t for t, row in zip(triples, rows) if row[3:] != ["map", "ok"]]
    return [tuple(int(x) for x in row[:3]) for row in rows]


def _makespan(ctas, steps, sms, blocks, pieces):
    if blocks == 0:
        return math.ceil(ctas / sms) * steps
    piece_steps = math.ceil(steps / pieces) + OVERHEAD
    return (ctas - blocks) // sms * steps + math.ceil(blocks * pieces / sms) * piece_steps


def test_standard_sweep_plans(tmp_path):
    """The standard backward sweep (b * s = 16k, h * d = 2048) on 132 SMs: head dim 128 has 2048
    key blocks of 128 keys (15.5 waves), 64-query steps; head dim 64 4096 blocks, 128-query steps."""
    cases = {(2048, 32): (1980, 68, 3), (4096, 16): (4092, 4, 16)}
    assert _plans(tmp_path, [(c, s, SMS) for c, s in cases]) == list(cases.values())


def test_plan_is_the_models_least(tmp_path):
    triples = [(ctas, steps, sms) for ctas in (1, 5, 131, 132, 133, 200, 264, 300, 1000, 2048, 4096)
               for steps in (1, 2, 3, 7, 16, 32, 65) for sms in (132, 108, 16)]
    for (ctas, steps, sms), (first, blocks, pieces) in zip(triples, _plans(tmp_path, triples)):
        whole = _makespan(ctas, steps, sms, 0, 1)
        options = {(b, p): _makespan(ctas, steps, sms, b, p)
                   for b in (ctas % sms, ctas % sms + sms) if 0 < b <= ctas and ctas % sms
                   for p in range(2, min(steps, 64) + 1)}
        best = min([whole, *options.values()])
        if blocks == 0:
            assert first == ctas and whole == best, (ctas, steps, sms)
            continue
        assert first == ctas - blocks and options[(blocks, pieces)] == best < whole, (ctas, steps, sms)
        assert all(v > best for (b, p), v in options.items() if p < pieces), (ctas, steps, sms)
