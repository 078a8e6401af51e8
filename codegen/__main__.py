"""Command line: list what a build selection instantiates, or render it.

  python -m codegen --list --head-dims 64,128 --dtypes bf16   # names, count, compile estimate
  python -m codegen --out build/generated --cuda-archs "80;90a"
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from .estimate import default_jobs, estimate, sm80_forward_tiles
from .render import render
from .selection import BuildSelection, SelectionError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="print the selected kernels and exit")
    action.add_argument("--out", type=Path, help="directory to render the sources, registry and manifest into")
    parser.add_argument("--templates", type=Path, default=None, help="template directory (default: ../templates)")
    parser.add_argument("--cuda-archs", help="FLASHGEN_CUDA_ARCHS, e.g. '80;90a'")
    parser.add_argument("--head-dims", help="FLASHGEN_HEAD_DIMS, e.g. '64;128;192x128'")
    parser.add_argument("--dtypes", help="FLASHGEN_DTYPES, e.g. 'bf16'")
    parser.add_argument("--variants", help="FLASHGEN_VARIANTS, e.g. 'plain;paged;softcap+alibi'")
    parser.add_argument("--directions", help="FLASHGEN_DIRECTIONS, e.g. 'fwd' or 'fwd;bwd'")
    parser.add_argument("--kernels", help="FLASHGEN_KERNELS include globs")
    parser.add_argument("--kernels-exclude", help="FLASHGEN_KERNELS_EXCLUDE exclude globs")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel compile jobs for --list's time estimate (default: "
                             "CMAKE_BUILD_PARALLEL_LEVEL, else the cores)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        selection = BuildSelection.from_values(
            cuda_archs=args.cuda_archs, head_dims=args.head_dims, dtypes=args.dtypes, variants=args.variants,
            directions=args.directions, kernels=args.kernels, kernels_exclude=args.kernels_exclude,
        )
        if args.list:
            specs = selection.specs()
            for spec in specs:
                print(spec.name)
            by_family = Counter(s.arch for s in specs)
            families = ", ".join(f"{n} {fam}" for fam, n in sorted(by_family.items()))
            jobs = args.jobs if args.jobs else default_jobs()
            backward = sum(1 for s in specs if s.direction == "bwd" and s.arch == "sm80")
            sm90_backward = sum(1 for s in specs if s.direction == "bwd" and s.arch == "sm90")
            decode = sum(1 for s in specs if s.direction == "decode")
            two_tile = sum(1 for s in specs if s.direction == "fwd" and s.arch == "sm80"
                           and sm80_forward_tiles(s.head_dim_qk, s.head_dim_v) == 2)
            est = estimate(len(specs), len(selection.cuda_archs), jobs, backward, by_family.get("sm90", 0), decode,
                           sm90_backward, two_tile)
            print(f"# {len(specs)} kernel(s) ({families or 'none'}) for CUDA archs "
                  f"{';'.join(selection.cuda_archs)}: {est.images} compiled images (sm90 kernels: sm_90a only)")
            print(est.describe())
            return 0
        report = render(selection, args.out, args.templates)
    except SelectionError as err:
        print(f"flashgen codegen: {err}", file=sys.stderr)
        return 2
    print(f"flashgen codegen: {len(report.written)} written, {len(report.unchanged)} unchanged, "
          f"{len(report.removed)} removed in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
