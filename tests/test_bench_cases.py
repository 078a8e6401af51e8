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


def test_decode_layers_table_divides_bytes_by_time_per_call():
    from flashgen.bench.decode import (HEAD_DIM, HEADS_KV, HEADS_Q, LAYERS, DecodeResult, LayersResult,
                                       layers_table)

    batch, seqlen = 1, 4096
    kv = 2 * batch * seqlen * HEADS_KV * HEAD_DIM  # K and V elements
    qo = 2 * batch * HEADS_Q * HEAD_DIM * 2  # Q and O bytes
    # 10 us per dense / paged call, 6 us per FP8 call, 12.5 us per cuDNN call.
    r = LayersResult(batch, seqlen, {"dense": 0.010, "paged16": 0.010, "fp8_paged16": 0.006, "sdpa_cudnn": 0.0125,
                                     "read_same": 0.008})
    assert abs(r.tbps["dense"] - (2 * kv + qo) / 10e-6 / 1e12) < 1e-9
    assert abs(r.tbps["fp8_paged16"] - (kv + qo) / 6e-6 / 1e12) < 1e-9
    single = [DecodeResult(batch, seqlen, {"dense": r.tbps["dense"] / 2}, None, None, None)]
    row = layers_table([r], read_tbps=2 * r.tbps["dense"], single=single)[-1].split(" | ")
    # dense / read 0.50, dense / read_same 0.80, dense / cuDNN 1.25, fp8 x bf16 (time ratio) 1.67,
    # dense x single 2.00.
    assert row[-5:] == ["0.50", "0.80", "1.25", "1.67", "2.00 |"]
    assert row[0] == f"| {LAYERS} x 1"  # not a key of tools/gpu_ab.sh's one-call rows (leading digits only)
    assert not row[0].strip("| ").replace("x", "").isdigit()


def test_decode_table_rows_keep_numeric_keys():
    """tools/gpu_ab.sh keys the one-call decode rows by their leading (batch, seqlen_k) cells."""
    from flashgen.bench.decode import NAMES, DecodeResult, table

    r = DecodeResult(8, 8192, {n: 2.0 for n in NAMES}, 1.8, 1e-4, 2e-4)
    cells = [c.strip() for c in table([r], read_tbps=3.0)[-1].strip().strip("|").split("|")]
    assert cells[:2] == ["8", "8192"]
    # the peers' and ceilings' columns keep their places (tools/gpu_ab.sh reads them by index)
    assert cells[2:2 + len(NAMES)] == ["2.00"] * len(NAMES) and NAMES[:3] == ("dense", "paged16", "paged256")
    assert cells[2 + len(NAMES):2 + len(NAMES) + 2] == ["0.67", "1.00"]  # best bf16 / read, dense / read_same


def test_gqa_case_counts_bottom_right_causal_pairs():
    from flashgen.bench.gqa import HEAD_DIM, GqaCase

    full = GqaCase(2, 5, 9, 8, 2, causal=False)
    assert full.visible_pairs() == 45
    # Query i sees keys 0 .. 4 + i (seqlen_k - seqlen_q + i): 5 + 6 + 7 + 8 + 9.
    assert GqaCase(2, 5, 9, 8, 2, causal=True).visible_pairs() == 35
    # More queries than keys: the first rows see nothing.
    assert GqaCase(1, 4, 2, 2, 1, causal=True).visible_pairs() == 0 + 0 + 1 + 2
    assert full.flops() == 4 * 2 * 8 * 45 * HEAD_DIM
