"""The decode split count (kernels/api/split_heuristic.h, choose_decode_splits) and the plan's
guess of the decode's loader (sm80_decode_tile.h, plan_takes_tma), which sets the wave it fills,
checked on the host: tests/cpp/split_heuristic_check.cpp and decode_loader_check.cpp compiled with
the C++ compiler (tests/host_program.py; no GPU)."""

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


def test_measured_paged_shapes_with_the_tma_loader(tmp_path):
    """GQA 32 / 8, head dim 128, pages of 16 read by the TMA loader at up to 16 (sequence, kv
    head) pairs, where the plan fills a wave of one CTA per SM: the split counts
    tools/decode_splits.py measured fastest on the H100 (session 33; bf16 64-key and FP8 128-key
    tiles, n_blocks = tiles / 2). The two-CTA wave took 32 at batch 1 (FP8 1 x 32k 1.75 TB/s
    against 16 splits' 1.91)."""
    cases = {  # (key tile, batch, seqlen_k): best measured split count
        (64, 1, 4096): 16, (64, 1, 16384): 16, (64, 1, 32768): 16, (64, 2, 16384): 8,
        (128, 1, 4096): 16, (128, 1, 16384): 16, (128, 1, 32768): 16, (128, 2, 16384): 8,
    }
    triples = [(batch * 8, seqlen // tile // 2, SMS) for tile, batch, seqlen in cases]
    assert _choices(tmp_path, triples) == list(cases.values())
    assert _choices(tmp_path, [(8, 32768 // 128 // 2, 2 * SMS)]) == [32]


def test_plan_takes_tma(tmp_path):
    """Hopper only; head dims 64 / 128; dense or pages of a power of two >= 16; every FP8 cache,
    16-bit ones up to 16 (sequence, kv head) pairs."""
    cases = {  # (kv_e4m3, head_dim, streams, compute capability, page size): takes TMA
        (1, 128, 2048, 90, 16): 1, (1, 64, 8, 90, 0): 1, (0, 128, 16, 90, 16): 1, (0, 128, 17, 90, 16): 0,
        (0, 128, 8, 90, 256): 1, (1, 128, 8, 80, 16): 0, (1, 128, 8, 100, 16): 0, (1, 256, 8, 90, 16): 0,
        (1, 128, 8, 90, 1): 0, (1, 128, 8, 90, 48): 0, (0, 96, 8, 90, 0): 0,
    }
    out = run_check(tmp_path, "decode_loader_check.cpp", "".join(" ".join(map(str, c)) + "\n" for c in cases),
                    cute=False)
    assert [int(x) for x in out.split()] == list(cases.values())


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
