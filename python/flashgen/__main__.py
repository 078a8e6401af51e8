"""python -m flashgen --cmake-prefix-path | --cmake-dir | --include-dir | --library

Prints where this installed flashgen keeps what a C/C++ build needs (see flashgen.paths), e.g.
  cmake -S app -B build -DCMAKE_PREFIX_PATH="$(python -m flashgen --cmake-prefix-path)"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .paths import cmake_dir, cmake_prefix_path, include_dir, library_path


def main(argv: list[str] | None = None) -> int:
    queries = {
        "--cmake-prefix-path": cmake_prefix_path,
        "--cmake-dir": cmake_dir,
        "--include-dir": include_dir,
        "--library": library_path,
    }
    parser = argparse.ArgumentParser(prog="python -m flashgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    for flag, query in queries.items():
        group.add_argument(flag, dest="query", action="store_const", const=query, help=query.__doc__)
    path = parser.parse_args(argv).query()
    if not Path(path).exists():
        print(f"flashgen: {path} does not exist; this install predates the C++ package "
              "(reinstall flashgen with `pip install .`)", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
