"""CPU tests of the generator: names, rules, build selection, rendering, manifest, CLI."""

import itertools
import json
import os
import re
import subprocess
import sys

import pytest

from codegen.render import render, write_if_different
from codegen.selection import BuildSelection, SelectionError, parse_cuda_arch, parse_head_dim
from codegen.spec import DIRECTIONS, DTYPES, FAMILIES, FLAGS, KernelSpec, is_valid, rejection

from conftest import REPO_ROOT


def all_axes_specs():
    for fam, direction, dtype, qk, v, *flags in itertools.product(
        FAMILIES, DIRECTIONS, DTYPES, (32, 64, 80, 128, 192, 256), (64, 128, 192), *[(False, True)] * len(FLAGS),
    ):
        yield KernelSpec(fam, direction, dtype, qk, v, *flags)


def selection(**kw):
    base = dict(cuda_archs="80", head_dims=None, dtypes=None, variants=None, directions="fwd", kernels=None,
                kernels_exclude=None, env={})
    base.update(kw)
    return BuildSelection.from_values(**base)


# ---- names ----

def test_names_are_stable():
    assert KernelSpec("sm80", "fwd", "bf16", 128, 128, True).name == "fwd_sm80_bf16_hdim128_causal"
    assert KernelSpec("sm80", "fwd", "fp16", 64, 64, False).name == "fwd_sm80_fp16_hdim64"
    assert (KernelSpec("sm90", "bwd", "e4m3", 192, 128, True, dropout=True, paged=True).name
            == "bwd_sm90_e4m3_hdim192x128_causal_dropout_paged")
    assert (KernelSpec("sm80", "fwd", "bf16", 64, 64, False, softcap=True, alibi=True).name
            == "fwd_sm80_bf16_hdim64_softcap_alibi")


def test_names_are_unique_and_parse_back():
    specs = list(all_axes_specs())
    names = [s.name for s in specs]
    assert len(set(names)) == len(names)
    for spec in specs:
        assert KernelSpec.parse(spec.name) == spec


def test_parse_rejects_garbage():
    for bad in ("", "fwd_sm80_bf16", "fwd_sm80_bf16_hdim64_causal_extra", "xyz_sm80_bf16_hdim64"):
        with pytest.raises(ValueError):
            KernelSpec.parse(bad)


# ---- rules ----

@pytest.mark.parametrize(
    "spec, fragment",
    [
        (KernelSpec("sm80", "fwd", "e4m3", 128, 128, False), "e4m3"),
        (KernelSpec("sm80", "fwd", "bf16", 264, 264, False), "head dims must be in"),
        (KernelSpec("sm80", "fwd", "bf16", 100, 100, False), "multiples of 8"),
        (KernelSpec("sm80", "fwd", "bf16", 128, 128, False, dropout=True, paged=True), "paged-KV"),
        (KernelSpec("sm70", "fwd", "bf16", 128, 128, False), "kernel family"),
        (KernelSpec("sm80", "fwd", "int8", 128, 128, False), "dtype"),
        (KernelSpec("sm80", "bwd", "bf16", 128, 128, False, paged=True), "paged"),
        (KernelSpec("sm90", "fwd", "bf16", 72, 72, False), "multiples of 16"),
        (KernelSpec("sm90", "bwd", "e4m3", 128, 128, False), "no backward pass"),
        (KernelSpec("sm90", "decode", "bf16", 128, 128, False), "decode kernels are in the sm80 family"),
        (KernelSpec("sm80", "decode", "bf16", 128, 128, True), "at run time"),
        (KernelSpec("sm80", "decode", "bf16", 128, 128, False, paged=True), "at run time"),
        (KernelSpec("sm80", "decode", "bf16", 192, 128, False), "head_dim_qk = head_dim_v"),
        (KernelSpec("sm80", "decode", "bf16", 72, 72, False), "multiple of 16"),
        (KernelSpec("sm80", "decode", "e4m3", 48, 48, False), "multiples of 32"),
        (KernelSpec("sm90", "fwd", "e4m3", 80, 80, False), "multiples of 32"),
        (KernelSpec("sm90", "fwd", "e4m3", 128, 128, True, softcap=True), "no softcap"),
        (KernelSpec("sm90", "bwd", "bf16", 88, 88, False), "multiples of 16"),
    ],
)
def test_rules_reject_with_a_reason(spec, fragment):
    reason = rejection(spec)
    assert reason is not None and fragment in reason


def test_rules_accept_the_sm90_backward_at_every_default_head_dim():
    # Head dims above 128 and qk != v take the roles-split consumers (kernels/sm90/sm90_bwd_traits.hpp).
    for (qk, v), causal in itertools.product(((32, 32), (64, 64), (96, 96), (128, 128), (192, 128), (192, 192),
                                              (256, 256)), (False, True)):
        assert rejection(KernelSpec("sm90", "bwd", "bf16", qk, v, causal)) is None, (qk, v)


def test_rules_accept_the_fp8_forward():
    for (qk, v), causal in itertools.product(((32, 32), (64, 64), (96, 96), (128, 128), (192, 128), (256, 256)),
                                             (False, True)):
        assert is_valid(KernelSpec("sm90", "fwd", "e4m3", qk, v, causal))


def test_rules_accept_the_implemented_kernels():
    for dtype, (qk, v), causal, softcap, alibi, (dropout, paged) in itertools.product(
            ("fp16", "bf16"), ((8, 8), (32, 32), (80, 80), (128, 128), (192, 128), (256, 256), (64, 128)),
            (False, True), (False, True), (False, True), ((False, False), (True, False), (False, True))):
        assert is_valid(KernelSpec("sm80", "fwd", dtype, qk, v, causal, softcap, alibi, dropout, paged))


# ---- build selection ----

def test_parse_cuda_arch_forms():
    assert [parse_cuda_arch(a) for a in ("80", "8.0", "sm_86", "90a", "sm_90a", "compute_89", "12.0")] == [
        "80", "80", "86", "90a", "90a", "89", "120"]
    with pytest.raises(SelectionError):
        parse_cuda_arch("75")
    with pytest.raises(SelectionError):
        parse_cuda_arch("hopper")


def test_parse_head_dim_forms():
    assert parse_head_dim("128") == (128, 128)
    assert parse_head_dim("192x128") == (192, 128)
    with pytest.raises(SelectionError):
        parse_head_dim("big")


def test_default_selection_is_the_implemented_set():
    names = [s.name for s in selection().specs()]
    # 7 head-dim pairs x 2 dtypes x 2 causal x (plain, softcap, alibi, dropout, paged)
    assert len(names) == 140
    for name in ("fwd_sm80_bf16_hdim128_causal", "fwd_sm80_fp16_hdim32", "fwd_sm80_bf16_hdim192x128_paged",
                 "fwd_sm80_fp16_hdim256_causal_dropout", "fwd_sm80_bf16_hdim64_softcap", "fwd_sm80_bf16_hdim96_alibi"):
        assert name in names


def test_directions_knob_adds_backward_kernels_of_the_training_variants():
    names = {s.name for s in selection(head_dims="128", dtypes="bf16", variants="plain;dropout;paged",
                                       directions="fwd;bwd").specs()}
    bwd = {n for n in names if n.startswith("bwd_")}
    assert bwd == {"bwd_sm80_bf16_hdim128", "bwd_sm80_bf16_hdim128_causal", "bwd_sm80_bf16_hdim128_dropout",
                   "bwd_sm80_bf16_hdim128_causal_dropout"}
    assert len(names - bwd) == 6
    # default: all three directions; decode: 6 head dims (not 192x128) x fp16, bf16, e4m3 caches
    assert len(selection(directions=None).specs()) == 140 + 112 + 18
    with pytest.raises(SelectionError, match="unknown direction"):
        selection(directions="sideways")


def test_decode_kernels_have_no_variants():
    """One decode kernel per (cache dtype, head dim), whatever FLASHGEN_VARIANTS says."""
    names = {s.name for s in selection(head_dims="128;192x128", dtypes="bf16;e4m3", variants="paged",
                                       directions="decode").specs()}
    assert names == {"decode_sm80_bf16_hdim128", "decode_sm80_e4m3_hdim128"}
    assert KernelSpec.parse("decode_sm80_e4m3_hdim64") == KernelSpec("sm80", "decode", "e4m3", 64, 64, False)


def test_variants_knob():
    names = {s.name for s in selection(head_dims="128", dtypes="bf16", variants="plain;softcap+alibi+dropout").specs()}
    assert names == {"fwd_sm80_bf16_hdim128", "fwd_sm80_bf16_hdim128_causal",
                     "fwd_sm80_bf16_hdim128_softcap_alibi_dropout", "fwd_sm80_bf16_hdim128_causal_softcap_alibi_dropout"}
    # dropout+paged is rejected by the rules, so it builds nothing.
    assert selection(head_dims="128", variants="dropout+paged").specs() == []
    with pytest.raises(SelectionError, match="unknown variant"):
        selection(variants="plain;rotary")


def test_head_dim_and_dtype_filters():
    names = {s.name for s in selection(head_dims="64;128", dtypes="bf16", variants="plain").specs()}
    assert names == {"fwd_sm80_bf16_hdim64", "fwd_sm80_bf16_hdim64_causal",
                     "fwd_sm80_bf16_hdim128", "fwd_sm80_bf16_hdim128_causal"}
    assert len(selection(head_dims="64;128", dtypes="bf16").specs()) == 20


def test_include_and_exclude_globs():
    names = {s.name for s in selection(kernels="fwd_sm80_bf16_*", variants="plain",
                                       kernels_exclude="*_causal*;*hdim256*;*x128*").specs()}
    assert names == {f"fwd_sm80_bf16_hdim{d}" for d in (32, 64, 96, 128, 192)}


def test_environment_is_the_fallback_and_arguments_win():
    env = {"FLASHGEN_HEAD_DIMS": "96", "FLASHGEN_DTYPES": "fp16", "FLASHGEN_CUDA_ARCHS": "86",
           "FLASHGEN_DIRECTIONS": "fwd"}
    sel = BuildSelection.from_values(env=env)
    assert sel.cuda_archs == ("86",)
    assert {s.name for s in sel.specs()} == {f"fwd_sm80_fp16_hdim96{c}{v}" for c in ("", "_causal")
                                             for v in ("", "_softcap", "_alibi", "_dropout", "_paged")}
    sel = BuildSelection.from_values(head_dims="32", env=env)
    assert {s.head_dim_qk for s in sel.specs()} == {32}


def test_families_follow_archs():
    assert selection(cuda_archs="80;86").families == ("sm80",)
    assert selection(cuda_archs="80;90a").families == ("sm80", "sm90")
    assert selection(cuda_archs="80;90a").gencode_flags() == [
        "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90a,code=sm_90a"]


def test_unknown_dtype_and_empty_selection_are_errors(tmp_path):
    with pytest.raises(SelectionError, match="unknown dtype"):
        selection(dtypes="fp64")
    empty = selection(kernels="nothing_matches_*")
    assert empty.specs() == []
    with pytest.raises(SelectionError, match="selects no kernel"):
        render(empty, tmp_path)


def test_unbuildable_head_dims_are_dropped_not_generated():
    assert {s.head_dim_qk for s in selection(head_dims="64;80;100;264").specs()} == {64, 80}


# ---- rendering ----

def test_write_if_different_leaves_unchanged_files_alone(tmp_path):
    path = tmp_path / "a.txt"
    assert write_if_different(path, "one")
    os.utime(path, (1_000_000, 1_000_000))
    assert not write_if_different(path, "one")
    assert path.stat().st_mtime == 1_000_000
    assert write_if_different(path, "two")
    assert path.read_text() == "two"


def test_render_is_incremental_and_removes_stale_sources(tmp_path):
    sel = selection(head_dims="64;128", dtypes="bf16", variants="plain")
    first = render(sel, tmp_path)
    assert len(first.written) == 4 + 3 and not first.unchanged
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    second = render(sel, tmp_path)
    assert not second.written and len(second.unchanged) == 7
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    third = render(selection(head_dims="64", dtypes="bf16", variants="plain"), tmp_path)
    assert sorted(third.removed) == ["kernels/fwd_sm80_bf16_hdim128.cu", "kernels/fwd_sm80_bf16_hdim128_causal.cu"]
    assert sorted(p.name for p in (tmp_path / "kernels").iterdir()) == [
        "fwd_sm80_bf16_hdim64.cu", "fwd_sm80_bf16_hdim64_causal.cu"]


def test_manifest_matches_generated_files(tmp_path):
    sel = selection(cuda_archs="80;90a", head_dims="64;96", dtypes="fp16;bf16")
    render(sel, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    names = [k["name"] for k in manifest["kernels"]]
    assert names == [s.name for s in sel.specs()]
    assert manifest["cuda_archs"] == ["80", "90a"]
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "kernels").glob("*.cu"))
    assert on_disk == sorted(k["source"] for k in manifest["kernels"])
    for entry in manifest["kernels"]:
        spec = KernelSpec.parse(entry["name"])
        assert {f: entry[f] for f in spec.__dataclass_fields__} == spec.__dict__
    cmake = (tmp_path / "kernels.cmake").read_text()
    assert sorted(re.findall(r'"[^"]*/(kernels/[^"]+\.cu)"', cmake)) == on_disk
    registry = (tmp_path / "registry.cpp").read_text()
    for name in names:
        assert f'"{name}"' in registry and f"&generated::{name}" in registry
    assert 'kCudaArchs = "80;90a"' in registry


def test_head_dims_outside_the_default_set_generate_end_to_end(tmp_path):
    # FLASHGEN_HEAD_DIMS="80;112;160": sources, registry keys and manifest entries, no edits needed.
    sel = selection(head_dims="80;112;160", dtypes="bf16", variants="plain;paged")
    render(sel, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted({k["head_dim_qk"] for k in manifest["kernels"]}) == [80, 112, 160]
    assert len(manifest["kernels"]) == 3 * 2 * 2
    assert manifest["selection"]["head_dims"] == ["80", "112", "160"]
    source = (tmp_path / "kernels" / "fwd_sm80_bf16_hdim112_paged.cu").read_text()
    assert "/*kHeadDimQK=*/112, /*kHeadDimV=*/112" in source and "/*kIsPaged=*/true" in source
    registry = (tmp_path / "registry.cpp").read_text()
    assert "FLASHGEN_DTYPE_BF16, 160, 160, false" in registry


def test_cmake_lists_and_comma_lists_select_the_same():
    # CMake forwards a cache list "80;112" to codegen as "80,112" (one argument).
    assert selection(head_dims="80;112;160").specs() == selection(head_dims="80,112,160").specs()
    assert selection(cuda_archs="80,90a").cuda_archs == ("80", "90a")


def test_each_generated_source_instantiates_one_template(tmp_path):
    render(selection(head_dims="128", dtypes="bf16", directions="fwd;bwd"), tmp_path)
    for path in (tmp_path / "kernels").glob("*.cu"):
        text = path.read_text()
        assert text.count("#include") == 2
        assert len(re.findall(r"run_(fwd|bwd)<", text)) == 1
        assert f"run_{path.stem[:3]}<" in text
        assert "#if" not in text and "switch" not in text
        assert path.stem in text


def test_cli_list_prints_names_and_count():
    env = dict(os.environ, FLASHGEN_CUDA_ARCHS="80", FLASHGEN_HEAD_DIMS="128", FLASHGEN_DTYPES="bf16",
               FLASHGEN_VARIANTS="plain", FLASHGEN_DIRECTIONS="fwd")
    env.pop("FLASHGEN_KERNELS", None)
    env.pop("FLASHGEN_KERNELS_EXCLUDE", None)
    result = subprocess.run([sys.executable, "-m", "codegen", "--list"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[:2] == ["fwd_sm80_bf16_hdim128", "fwd_sm80_bf16_hdim128_causal"]
    assert lines[2].startswith("# 2 kernel(s)")
    assert lines[3].startswith("# estimated compile time:")


def test_compile_estimate_counts_images_and_serial_archs():
    from codegen.estimate import SECONDS_PER_BWD_IMAGE, SECONDS_PER_IMAGE, default_jobs, estimate

    est = estimate(num_kernels=140, num_archs=2, jobs=16)
    assert est.core_seconds == 280 * SECONDS_PER_IMAGE
    # 140 sources over 16 jobs is 9 rounds, each compiling both archs of one source.
    assert est.wall_seconds == 9 * 2 * SECONDS_PER_IMAGE
    both = estimate(num_kernels=252, num_archs=1, jobs=16, num_backward=112)
    assert both.core_seconds == 140 * SECONDS_PER_IMAGE + 112 * SECONDS_PER_BWD_IMAGE
    assert default_jobs({"CMAKE_BUILD_PARALLEL_LEVEL": "3"}) == 3
    assert default_jobs({}) >= 1


def test_cli_reports_selection_errors():
    result = subprocess.run([sys.executable, "-m", "codegen", "--list", "--dtypes", "fp64"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown dtype" in result.stderr


def test_sm90_family_builds_hopper_forward_kernels_in_their_own_cmake_list(tmp_path):
    sel = selection(cuda_archs="80;90a", head_dims="64;72", dtypes="bf16", variants="plain;paged",
                    directions="fwd")
    names = {s.name for s in sel.specs()}
    # hdim 72 is not a multiple of 16: the sm80 kernels serve it.
    assert {n for n in names if "sm90" in n} == {"fwd_sm90_bf16_hdim64", "fwd_sm90_bf16_hdim64_causal",
                                                 "fwd_sm90_bf16_hdim64_paged", "fwd_sm90_bf16_hdim64_causal_paged"}
    assert {"fwd_sm80_bf16_hdim72", "fwd_sm80_bf16_hdim64_paged"} <= names
    render(sel, tmp_path)
    cmake = (tmp_path / "kernels.cmake").read_text()
    sm90_list = cmake.split("set(FLASHGEN_SM90_KERNEL_SOURCES")[1]
    other_list = cmake.split("set(FLASHGEN_KERNEL_SOURCES")[1].split(")")[0]
    assert "fwd_sm90_bf16_hdim64.cu" in sm90_list and "fwd_sm90" not in other_list
    assert '"-gencode=arch=compute_90a,code=sm_90a"' in cmake.split("set(FLASHGEN_SM90_GENCODE_FLAGS")[1].split(")")[0]
    source = (tmp_path / "kernels" / "fwd_sm90_bf16_hdim64_causal.cu").read_text()
    assert "sm90::run_fwd<cutlass::bfloat16_t" in source and "/*kIsCausal=*/true" in source


def test_compile_estimate_counts_sm90_kernels_once():
    from codegen.estimate import estimate

    est = estimate(num_kernels=10, num_archs=2, jobs=4, num_backward=2, num_single_arch=3)
    assert est.images == 5 * 2 + 2 * 2 + 3
    assert est.core_seconds == (5 * 2 + 3) * 30.0 + 2 * 2 * 50.0


def test_compile_estimate_prices_two_tile_sm80_forward_kernels():
    from codegen.estimate import SECONDS_PER_IMAGE, SECONDS_PER_TWO_TILE_IMAGE, estimate, sm80_forward_tiles

    # Padded head dims above 128 (136 pads to 160) hold the wide and the narrow tile.
    assert [sm80_forward_tiles(d, d) for d in (64, 128, 136, 192, 256)] == [1, 1, 2, 2, 2]
    assert sm80_forward_tiles(192, 128) == 2 and sm80_forward_tiles(128, 96) == 1
    est = estimate(num_kernels=5, num_archs=2, jobs=4, num_two_tile=3)
    assert est.images == 10
    assert est.core_seconds == (2 * SECONDS_PER_IMAGE + 3 * SECONDS_PER_TWO_TILE_IMAGE) * 2


def test_cli_list_prices_two_tile_kernels():
    env = dict(os.environ, FLASHGEN_CUDA_ARCHS="80", FLASHGEN_DTYPES="bf16", FLASHGEN_VARIANTS="plain",
               FLASHGEN_DIRECTIONS="fwd")
    env.pop("FLASHGEN_KERNELS", None)
    env.pop("FLASHGEN_KERNELS_EXCLUDE", None)

    def core_minutes(head_dims):
        out = subprocess.run([sys.executable, "-m", "codegen", "--list", "--head-dims", head_dims], cwd=REPO_ROOT,
                             env=env, capture_output=True, text=True, check=True).stdout
        return float(re.search(r"compile time: ([0-9.]+) core-minute", out).group(1))
    assert core_minutes("256") > core_minutes("128")


def test_compile_estimate_prices_decode_and_sm90_backward_kernels():
    from codegen.estimate import SECONDS_PER_BWD_IMAGE, SECONDS_PER_DECODE_IMAGE, SECONDS_PER_IMAGE, estimate

    # 4 sm80 forward, 2 decode (both archs); 3 sm90 kernels (sm_90a only), 1 of them backward.
    est = estimate(num_kernels=9, num_archs=2, jobs=4, num_single_arch=3, num_decode=2, num_single_arch_backward=1)
    assert est.images == 6 * 2 + 3
    assert est.core_seconds == (4 * SECONDS_PER_IMAGE + 2 * SECONDS_PER_DECODE_IMAGE) * 2 + \
        2 * SECONDS_PER_IMAGE + SECONDS_PER_BWD_IMAGE
