"""Loads the compiled library (flashgen._C over libflashgen.so) and its build manifest."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import ModuleType

_PACKAGE_DIR = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def lib() -> ModuleType:
    try:
        from . import _C
    except ImportError as err:
        raise ImportError(
            "flashgen's compiled library (flashgen._C, libflashgen.so) could not be loaded: "
            f"{err}. Build and install the package with `pip install .` from a flashgen checkout."
        ) from err
    return _C


@functools.lru_cache(maxsize=None)
def manifest() -> dict:
    """The build manifest: selection, CUDA archs and every kernel's axes (codegen's output)."""
    path = _PACKAGE_DIR / "manifest.json"
    if not path.is_file():
        raise ImportError(f"flashgen build manifest missing at {path}; reinstall the package")
    return json.loads(path.read_text())


def built_kernels() -> tuple[str, ...]:
    """Names of the compiled kernel instantiations, as the library reports them."""
    return tuple(lib().kernel_names())


def cuda_archs() -> tuple[str, ...]:
    """CUDA architectures the library holds machine code for, e.g. ('80', '90a')."""
    return tuple(a for a in lib().cuda_archs().split(";") if a)
