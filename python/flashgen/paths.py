"""Where an installed flashgen keeps what a C/C++ build needs.

The wheel installs the C API headers, libflashgen.so and a CMake package inside the Python
package, so the package directory is itself a CMake prefix:

    cmake -S app -B build -DCMAKE_PREFIX_PATH="$(python -m flashgen --cmake-prefix-path)"
    # or -Dflashgen_DIR="$(python -m flashgen --cmake-dir)"

and in CMakeLists.txt: find_package(flashgen REQUIRED), target_link_libraries(app flashgen::flashgen).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def cmake_prefix_path() -> str:
    """A CMAKE_PREFIX_PATH entry under which find_package(flashgen) finds this install."""
    return str(_PACKAGE_DIR)


def cmake_dir() -> str:
    """The directory holding flashgenConfig.cmake (a value for flashgen_DIR)."""
    return str(_PACKAGE_DIR / "lib" / "cmake" / "flashgen")


def include_dir() -> str:
    """The directory to add to the include path for <flashgen/flashgen.h>."""
    return str(_PACKAGE_DIR / "include")


def library_path() -> str:
    """libflashgen.so, the library behind the C API."""
    return str(_PACKAGE_DIR / "libflashgen.so")
