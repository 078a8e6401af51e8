"""Rendering: one .cu per kernel, the registry, the manifest (JSON and CMake list).

Files are written only when their content changes, so an unchanged selection leaves every
timestamp alone and ninja rebuilds nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .selection import BuildSelection, SelectionError
from .spec import KernelSpec

MANIFEST_VERSION = 1
KERNEL_SUBDIR = "kernels"

CPP_ELEMENT = {"fp16": "cutlass::half_t", "bf16": "cutlass::bfloat16_t", "e4m3": "cutlass::float_e4m3_t"}
CPP_DTYPE_ENUM = {"fp16": "FLASHGEN_DTYPE_FP16", "bf16": "FLASHGEN_DTYPE_BF16", "e4m3": "FLASHGEN_DTYPE_E4M3"}
CPP_FAMILY = {"sm80": "KernelFamily::kSm80", "sm90": "KernelFamily::kSm90"}
CPP_DIRECTION = {"fwd": "Direction::kFwd", "bwd": "Direction::kBwd", "decode": "Direction::kDecode"}


def default_template_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "templates"


@dataclass
class RenderReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def write_if_different(path: Path, content: str) -> bool:
    """Writes `content` to `path` unless it already holds exactly that; True if written."""
    if path.is_file() and path.read_text() == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    tmp.replace(path)
    return True


def kernel_source(spec: KernelSpec) -> str:
    return f"{KERNEL_SUBDIR}/{spec.name}.cu"


def manifest_dict(selection: BuildSelection, specs: list[KernelSpec]) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "cuda_archs": list(selection.cuda_archs),
        "selection": selection.describe(),
        "kernels": [dict(name=s.name, source=kernel_source(s), **asdict(s)) for s in specs],
    }


def render(selection: BuildSelection, out_dir: Path, template_dir: Path | None = None) -> RenderReport:
    import jinja2  # build-time dependency only; the runtime package never renders

    specs = selection.specs()
    if not specs:
        raise SelectionError(
            f"the build selection {selection.describe()} selects no kernel; "
            "`python -m codegen --list` shows what a selection builds"
        )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir or default_template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    out_dir = Path(out_dir).resolve()
    report = RenderReport()

    def emit(relative: str, content: str) -> None:
        changed = write_if_different(out_dir / relative, content)
        (report.written if changed else report.unchanged).append(relative)

    for spec in specs:
        template = env.get_template(f"{spec.direction}_{spec.arch}.cu.j2")
        emit(kernel_source(spec), template.render(spec=spec, cpp_element=CPP_ELEMENT[spec.dtype]))

    rows = [
        dict(
            spec=s,
            source=kernel_source(s),
            family=CPP_FAMILY[s.arch],
            direction=CPP_DIRECTION[s.direction],
            dtype=CPP_DTYPE_ENUM[s.dtype],
        )
        for s in specs
    ]
    context = dict(
        kernels=rows,
        sm90_gencode_flags=[f for f in selection.gencode_flags() if f.endswith("sm_90a")],
        cuda_archs=selection.cuda_archs,
        gencode_flags=selection.gencode_flags(),
        out_dir=out_dir.as_posix(),
    )
    emit("registry.cpp", env.get_template("registry.cpp.j2").render(**context))
    emit("kernels.cmake", env.get_template("kernels.cmake.j2").render(**context))
    emit("manifest.json", json.dumps(manifest_dict(selection, specs), indent=2) + "\n")

    # Kernels dropped from the selection leave no stale sources behind.
    wanted = {out_dir / kernel_source(s) for s in specs}
    kernel_dir = out_dir / KERNEL_SUBDIR
    for stale in sorted(kernel_dir.glob("*.cu")):
        if stale not in wanted:
            stale.unlink()
            report.removed.append(f"{KERNEL_SUBDIR}/{stale.name}")
    return report
