"""flashgen's kernel generator: specs, build selection, rendering.

Runs from the source tree at build time (`python -m codegen`) and ships inside the wheel as
`flashgen.codegen`, so the runtime names kernels with the same code that generated them.
"""

from .selection import BuildSelection, SelectionError
from .spec import KernelSpec, is_valid, rejection

__all__ = ["BuildSelection", "KernelSpec", "SelectionError", "is_valid", "rejection"]
