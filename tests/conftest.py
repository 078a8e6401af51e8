import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The generator is tested from the source tree (it is what the build runs).
sys.path.insert(0, str(REPO_ROOT))


def _gpu_skip_reason():
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


GPU_SKIP_REASON = _gpu_skip_reason()
requires_gpu = pytest.mark.skipif(GPU_SKIP_REASON is not None, reason=GPU_SKIP_REASON or "")


@pytest.fixture(autouse=True)
def _forward_family_of_spec(request, monkeypatch):
    """A test parametrized by a forward kernel spec runs that spec's kernel family: on Hopper
    both families may be built, and dispatch alone would pick sm90 for the sm80 specs too."""
    if request.node.get_closest_marker("gpu") is None:
        return  # CPU tests use specs as data
    callspec = getattr(request.node, "callspec", None)
    spec = callspec.params.get("spec") if callspec is not None else None
    if getattr(spec, "direction", None) == "bwd":
        # The backward entry point would take an sm90 kernel on Hopper for an sm80 spec too.
        if spec.arch == "sm90":
            import torch

            if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
                pytest.skip("sm90 kernels run on compute capability 9.0 GPUs only")
        monkeypatch.setenv("FLASHGEN_BWD_BACKEND", spec.arch)
        return
    if getattr(spec, "direction", None) == "decode":
        monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "decode")
        return
    if getattr(spec, "direction", None) != "fwd":
        return
    if spec.arch == "sm90":
        import torch

        if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
            pytest.skip("sm90 kernels run on compute capability 9.0 GPUs only")
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", spec.arch)
