"""The CTA tile order shared by the host and the kernels (kernels/common/tile_order.h), checked on
the host: tests/cpp/tile_order_check.cpp compiled with nvcc (a host-only program; no GPU)."""

from host_program import run_check


def test_sectioned_order(tmp_path):
    out = run_check(tmp_path, "tile_order_check.cpp")
    assert out.strip().endswith(", 0 failures"), out
