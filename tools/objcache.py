#!/usr/bin/env python3
"""nvcc launcher with an object cache that moves between machines (CMake's compiler launcher).

Why: a GPU session has ~30 minutes of device time and a call's build of a dozen CuTe kernels
takes 100-300 s of it. The same translation units can be compiled beforehand on a CPU machine
(same nvcc, same sources) and their objects carried: the device's build then only compiles what
changed. Used for the CUDA sources of libflashgen only; linking and the host compiler's C++
sources run as usual.

    export FLASHGEN_OBJCACHE=$PWD/.objcache CMAKE_CUDA_COMPILER_LAUNCHER=$PWD/tools/objcache.py
    pip install --no-build-isolation .        # (CMake reads the launcher at first configure)

Cache entry (ccache's "direct mode", written small here):
  key  = sha256 of the compile command with its machine-specific paths replaced by placeholders
         (<BUILD> the build directory, <ROOT> the source tree, <CUTLASS>, <CUDA> the include
         roots), the nvcc release line and the source file's bytes;
  m/<key>.json lists earlier compiles of that key: the headers they read (from nvcc's depfile,
         each as placeholder path + sha256 of its bytes) and the object's file o/<sha>.o;
  a hit needs every listed header to hash the same here. The object is copied to -o and a
  depfile naming the local headers is written to -MF, so ninja tracks them as after a compile.
Not part of the key, by choice: the host compiler's version and the system headers it reads
(gcc 12 here, 13 on the device: host stubs built by either link with the other's libstdc++),
the compiler's path. Misses compile as usual and add their entry. Every call appends "hit" or
"miss", the object's name and the key's first 16 hex digits to <cache>/log.txt; a miss also
writes what its key was made of to k/<key16>.json (diff it against the other machine's). FLASHGEN_OBJCACHE unset: plain nvcc.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Options whose value is the next argument (joined into one token for the key).
_PAIRED = {"-o", "-MF", "-MT", "-x", "-c", "-I", "-isystem", "-Xcompiler", "-D", "-ccbin"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return _sha(f.read())
    except OSError:
        return None


def _tokens(args: list[str]) -> list[tuple[str, str]]:
    """(option, value) pairs: '-isystem X', '-isystem=X' and '-IX' all become ('-isystem', X) etc."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a in _PAIRED and i + 1 < len(args):
            out.append((a, args[i + 1]))
            i += 2
            continue
        m = re.match(r"^(-isystem|-Xcompiler|-ccbin|-o)=(.*)$", a) or re.match(r"^(-I|-D)(.+)$", a)
        out.append((m.group(1), m.group(2)) if m else (a, ""))
        i += 1
    return out


class Paths:
    """The machine-specific roots of one compile, and their placeholders."""

    def __init__(self, tokens: list[tuple[str, str]], cwd: str):
        self.roots: list[tuple[str, str]] = [("<BUILD>", os.path.normpath(cwd))]
        for opt, val in tokens:
            if opt not in ("-I", "-isystem"):
                continue
            p = os.path.normpath(val)
            if os.path.basename(p) == "kernels" and os.path.isdir(os.path.join(p, "..", "codegen")):
                self.roots.append(("<ROOT>", os.path.dirname(p)))
            elif os.path.exists(os.path.join(p, "cute", "tensor.hpp")):
                self.roots.append(("<CUTLASS>", p))
            elif os.path.exists(os.path.join(p, "cuda_runtime.h")):
                self.roots.append(("<CUDA>", p))
        # Longest first: the build directory usually lies inside the source tree.
        self.roots.sort(key=lambda r: -len(r[1]))

    def complete(self) -> bool:
        return {"<ROOT>", "<CUTLASS>"} <= {tag for tag, _ in self.roots}

    def normalize(self, text: str) -> str | None:
        """A path (or a token holding one) with its root as a placeholder; None: under no root."""
        for tag, root in self.roots:
            if text == root or text.startswith(root + os.sep):
                return tag + text[len(root):]
        return None

    def normalize_token(self, text: str) -> str:
        for tag, root in self.roots:
            text = text.replace(root, tag)
        return text

    def local(self, text: str) -> str:
        for tag, root in self.roots:
            if text.startswith(tag):
                return root + text[len(tag):]
        return text


def _nvcc_release(compiler: str) -> str:
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""
    return next((line.strip() for line in out.splitlines() if "release" in line), out.strip())


def _read_depfile(path: str) -> list[str]:
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    _, _, deps = text.partition(": ")
    # gcc escapes spaces in names as '\ '; none of our paths have them, so split on whitespace.
    return [os.path.normpath(d) for d in deps.split() if d]


def _write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _log(cache: str, what: str, obj: str, key: str) -> None:
    with open(os.path.join(cache, "log.txt"), "a") as f:
        f.write(f"{what} {obj} {key[:16]}\n")


def run(argv: list[str], cache: str | None) -> int:
    compiler, args = argv[0], argv[1:]
    if not cache:
        return subprocess.call([compiler, *args])
    tokens = _tokens(args)
    opts = dict(tokens)
    out, depfile, source = opts.get("-o"), opts.get("-MF"), opts.get("-c")
    paths = Paths(tokens, os.getcwd())
    if not (out and depfile and source and paths.complete()):
        return subprocess.call([compiler, *args])  # not a libflashgen compile: no caching
    keyed = [f"{opt} {paths.normalize_token(val)}" if opt not in ("-MT",) else opt for opt, val in tokens]
    includes = [k for k in keyed if k.startswith(("-I ", "-isystem "))]
    others = sorted(k for k in keyed if not k.startswith(("-I ", "-isystem ")))  # CMake versions reorder
    source_sha = _file_sha(source)
    if source_sha is None:
        return subprocess.call([compiler, *args])
    material = [_nvcc_release(compiler), includes, others, source_sha]
    key = _sha(json.dumps(material).encode())
    manifest_path = os.path.join(cache, "m", key + ".json")
    name = os.path.basename(out)
    try:
        with open(manifest_path) as f:
            entries = json.load(f)
    except (OSError, ValueError):
        entries = []
    for entry in entries:
        if all(_file_sha(paths.local(dep)) == sha for dep, sha in entry["deps"].items()):
            obj = os.path.join(cache, "o", entry["object"])
            if _file_sha(obj) != entry["object"].removesuffix(".o"):
                continue
            shutil.copyfile(obj, out)
            deps = " ".join(paths.local(d) for d in entry["deps"])
            with open(depfile, "w") as f:
                f.write(f"{out}: {deps}\n")
            _log(cache, "hit", name, key)
            return 0
    rc = subprocess.call([compiler, *args])
    if rc != 0:
        return rc
    deps = {}
    for dep in _read_depfile(depfile):
        placeholder = paths.normalize(dep)
        if placeholder is None:
            continue  # system / host-compiler headers: not part of the key (see the docstring)
        sha = _file_sha(dep)
        if sha is None:
            return rc  # a header vanished mid-build: do not record this compile
        deps[placeholder] = sha
    with open(out, "rb") as f:
        data = f.read()
    obj_name = _sha(data) + ".o"
    if not os.path.exists(os.path.join(cache, "o", obj_name)):
        _write_atomic(os.path.join(cache, "o", obj_name), data)
    entries = [e for e in entries if e["deps"] != deps] + [{"deps": deps, "object": obj_name}]
    _write_atomic(manifest_path, json.dumps(entries[-8:], indent=0).encode())
    # What the key was made of, to compare with the other machine's when a hit was expected.
    _write_atomic(os.path.join(cache, "k", key[:16] + ".json"), json.dumps(material, indent=1).encode())
    _log(cache, "miss", name, key)
    return rc


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], os.environ.get("FLASHGEN_OBJCACHE")))
