"""CPU tests of the benchmark's case list: head-dim parsing (qk x v pairs) and the FLOP counts
that every TFLOP/s figure in bench/RESULTS.md divides by."""

from flashgen.bench.sweep import MODEL_DIM, TOKENS, Case, parse_head_dims, standard_cases


def test_head_dims_parse_pairs_and_plain_dims():
    assert parse_head_dims("64,128;192x128, 256x256") == (64, 128, (192, 128), 256)
    assert parse_head_dims("") == ()


def test_cases_carry_the_value_head_dim():
    cases = standard_cases(parse_head_dims("128,192x128"), (2048, 4096), (False, True))
    assert [c.label for c in cases] == ["128"] * 4 + ["192x128"] * 4
    assert {c.dv for c in cases if c.head_dim == 192} == {128}
    mla = Case(192, 2048, False, head_dim_v=128)
    assert mla.shape(mla.dv) == (TOKENS // 2048, 2048, MODEL_DIM // 192, 128)


def test_flops_count_both_products():
    # 2 b h s^2 d for Q K^T plus 2 b h s^2 d_v for P V, halved under a causal mask.
    plain = Case(128, 4096, False)
    assert plain.flops() == 4 * plain.batch * plain.nheads * 4096 * 4096 * 128
    assert Case(128, 4096, True).flops() == plain.flops() / 2
    mla = Case(192, 8192, False, head_dim_v=128)
    assert mla.flops() == 2 * mla.batch * mla.nheads * 8192 * 8192 * (192 + 128)
