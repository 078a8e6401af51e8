"""The decode split count (kernels/api/split_heuristic.h, choose_decode_splits), checked on the
host: tests/cpp/split_heuristic_check.cpp compiled with the C++ compiler (tests/host_program.py; no GPU)."""

import math

from host_program import run_check

SMS = 132  # H100 / H200


def _choices(tmp_path, triples):
    out = run_check(tmp_path, "split_heuristic_check.cpp", "".join(f"{c} {n} {w}\n" for c, n, w in triples),
                    cute=False)
    return [int(x) for x in out.split()]


OVERHEAD = 2  # kDecodeSplitOverheadBlocks


def _busiest_sm(ctas, n_blocks, wave, splits):
    return math.ceil(ctas * splits / wave) * (math.ceil(n_blocks / splits) + OVERHEAD)


def test_measured_shapes(tmp_path):
    """GQA 32 / 8, head dim 128, bf16 dense cache (64-key tiles, n_blocks = tiles / 2): the split
    counts tools/decode_splits.py measured fastest on the H200 (session 22), and 8 x 32k, where 2
    splits ran 8% faster than the 37 of a rule without the per-CTA overhead (session 23)."""
    cases = {  # (batch, seqlen_k): best measured split count
        (1, 4096): 16, (1, 32768): 16, (4, 16384): 4, (8, 8192): 2, (16, 8192): 1, (8, 32768): 2,
    }
    triples = [(batch * 8, seqlen // 64 // 2, SMS) for batch, seqlen in cases]
    assert _choices(tmp_path, triples) == list(cases.values())


def test_least_busiest_sm_and_fewest_splits_among_equals(tmp_path):
    triples = [(ctas, n, wave) for ctas in (1, 3, 8, 20, 40, 64, 100, 105, 106, 200) for n in (1, 2, 7, 32, 255, 1024)
               for wave in (SMS, 2 * SMS, 108)]
    for (ctas, n, wave), splits in zip(triples, _choices(tmp_path, triples)):
        if n <= 1 or ctas >= wave * 8 // 10:
            assert splits == 1, (ctas, n, wave)
            continue
        costs = {s: _busiest_sm(ctas, n, wave, s) for s in range(1, min(n, 128) + 1)}
        best = min(costs.values())
        assert costs[splits] == best and all(costs[s] > best for s in range(1, splits)), (ctas, n, wave, splits)
