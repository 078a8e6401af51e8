"""When the Hopper forward packs a GQA group's query heads into its tiles' rows
(kernels/sm90/sm90_fwd_tile.h, fwd_pack_gqa): where one head per tile would leave the tiles
under 90% as full as packed ones. Checked on the host (tests/cpp/pack_gqa_check.cpp; no GPU)."""

from host_program import run_check


def _rule(group, seqlen_q, block_m=128):
    """rows / padded rows < 0.9 x packed rows / padded packed rows, in integers."""
    rows, packed = seqlen_q, seqlen_q * group
    padded = lambda n: -(-n // block_m) * block_m  # noqa: E731
    return group > 1 and seqlen_q > 0 and 10 * rows * padded(packed) < 9 * packed * padded(rows)


def test_packing_rule(tmp_path):
    cases = [(g, s, m) for g in (1, 2, 3, 4, 7, 8, 16) for s in (0, 1, 5, 16, 64, 100, 127, 128, 129, 200, 239, 1000,
                                                                  1023, 2048, 4100) for m in (128, 192)]
    out = run_check(tmp_path, "pack_gqa_check.cpp", "".join(f"{g} {s} {m}\n" for g, s, m in cases))
    assert [bool(int(x)) for x in out.split()] == [_rule(*c) for c in cases]


def test_packing_rule_examples(tmp_path):
    # (group, seqlen_q) -> packed: one token and short chunks pack; 1,000 tokens fill 98% of
    # their 1,024 rows and stay one head per tile; no packing without GQA.
    examples = {(8, 1): True, (8, 16): True, (8, 64): True, (4, 100): False, (8, 100): True, (4, 129): True,
                (8, 1000): False, (4, 2048): False, (1, 5): False}
    out = run_check(tmp_path, "pack_gqa_check.cpp", "".join(f"{g} {s} 128\n" for g, s in examples))
    assert [bool(int(x)) for x in out.split()] == list(examples.values())
