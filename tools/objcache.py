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
         each as placeholder path + sha256 of its bytes) and the object's file o/<sha>.o.xz
         (named by the sha256 of the object, stored xz-compressed: ~8x smaller);
  a hit needs every listed header to hash the same here. The object is copied to -o and a
  depfile naming the local headers is written to -MF, so ninja tracks them as after a compile.
Not part of the key, by choice (ccache's "system_headers" sloppiness): the host compiler's
version and the system headers it reads (gcc 12 here, 13 on the device: host stubs built by
either link with the other's libstdc++), the compiler's path, and the CUDA toolkit's headers,
which the nvcc release line stands for (this machine's toolkit is assembled from NVIDIA's pip
wheels, cudart 13.0.96 beside nvcc 13.0.88; the device's image may package the same release
differently). FLASHGEN_OBJCACHE_STRICT=1 checks the toolkit's headers too.
Misses compile as usual and add their entry. Every call appends "hit" or "miss", the object's
name and the key's first 16 hex digits to <cache>/log.txt; a miss also writes what its key was
made of to k/<key16>.json (diff it against the other machine's).
`tools/objcache.py --prune-since N [CACHE]` keeps only the keys the log names after line N;
`tools/objcache.py --compare REPORT [CACHE]` says how another machine's miss report differs from
this cache's compiles of the same source.
FLASHGEN_OBJCACHE unset: plain nvcc.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import lzma
except ImportError:  # a Python built without liblzma: objects stored plain
    lzma = None

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
    """The machine-specific roots of one compile, and their placeholders.

    Headers are classified by their real path: CMake versions name the toolkit's include
    directory differently (3.25 `cuda-13.0/include`, 3.31 its target `cuda-13.0/targets/x86_64-
    linux/include`) while nvcc's depfile names the first. The toolkit's include directory is
    also taken from the compiler's location, where CMake leaves it implicit.
    """

    def __init__(self, tokens: list[tuple[str, str]], cwd: str, compiler: str):
        found = [("<BUILD>", cwd)]
        for opt, val in tokens:
            if opt not in ("-I", "-isystem"):
                continue
            path = os.path.normpath(val)
            if os.path.basename(path) == "kernels" and os.path.isdir(os.path.join(path, "..", "codegen")):
                found.append(("<ROOT>", os.path.dirname(path)))
            elif os.path.exists(os.path.join(val, "cute", "tensor.hpp")):
                found.append(("<CUTLASS>", val))
            elif (cuda := _toolkit_root(val, compiler)) is not None:
                found.append(("<CUDA>", cuda))
        toolkit = os.path.join(os.path.dirname(os.path.realpath(compiler)), "..", "include")
        if os.path.exists(os.path.join(toolkit, "cuda_runtime.h")):
            found.append(("<CUDA>", toolkit))
        # As written (for the command's tokens) and resolved (for headers); longest first, since
        # the build directory usually lies inside the source tree.
        spelled = {(tag, os.path.normpath(p)) for tag, p in found} | {(tag, os.path.realpath(p)) for tag, p in found}
        self.spellings = sorted(spelled, key=lambda r: -len(r[1]))
        self.roots = sorted({(tag, os.path.realpath(p)) for tag, p in found}, key=lambda r: -len(r[1]))

    def complete(self) -> bool:
        return {"<ROOT>", "<CUTLASS>"} <= {tag for tag, _ in self.roots}

    def normalize(self, path: str) -> str | None:
        """A header's path with its root as a placeholder; None: under no root (system headers)."""
        real = os.path.realpath(path)
        for tag, root in self.roots:
            if real.startswith(root + os.sep):
                return tag + real[len(root):]
        return None

    def normalize_token(self, text: str) -> str:
        for tag, root in self.spellings:
            text = text.replace(root, tag)
        return text

    def local(self, placeholder: str) -> str:
        for tag, root in self.roots:
            if placeholder.startswith(tag + os.sep):
                return root + placeholder[len(tag):]
        return placeholder


def _toolkit_root(path: str, compiler: str) -> str | None:
    """The CUDA toolkit include root that include directory `path` belongs to, however the machine
    spells it (a symlinked /usr/local/cuda, a pip wheel's nvidia/cu13): `path` or its parent where
    one holds cuda_runtime.h (CMake 4 adds include/cccl, alone where it leaves the root implicit),
    or `path` itself under the compiler's own prefix (bin/..). None: not the toolkit's."""
    for d in (path, os.path.dirname(os.path.normpath(path))):
        if os.path.exists(os.path.join(d, "cuda_runtime.h")):
            return d
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(compiler)))
    if prefix not in ("/", "/usr", "/usr/local") and os.path.realpath(path).startswith(prefix + os.sep):
        return path
    return None


def _nvcc_release(compiler: str) -> str:
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""
    return next((line.strip() for line in out.splitlines() if "release" in line), out.strip())


def _host_compiler(ccbin: str | None) -> str:
    """Which host compiler a compile uses, not where it lies: `-ccbin`'s (nvcc's default is g++ on
    the PATH) version and target. One machine's CMake names /opt/gcc/bin/g++, another's none."""
    exe = ccbin or shutil.which("g++") or "g++"
    if os.path.isdir(exe):  # -ccbin may name the compiler's directory
        exe = os.path.join(exe, "g++")
    try:
        facts = [subprocess.run([exe, flag], capture_output=True, text=True, check=False).stdout.strip()
                 for flag in ("-dumpfullversion", "-dumpmachine")]
    except OSError:
        return "unknown " + os.path.basename(exe)
    return " ".join(facts)


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


def _read_object(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not path.endswith(".xz"):
            return data
        if lzma is not None:
            return lzma.decompress(data)
        # A Python without liblzma (the objects were compressed elsewhere): the xz tool, if any.
        return subprocess.run(["xz", "-dc"], input=data, capture_output=True, check=True).stdout
    except Exception:  # noqa: BLE001 - unreadable, truncated, or no lzma here: a miss
        return None


def _load(manifest_path: str) -> list[dict]:
    """A manifest's entries (the file: {"key": what the key was made of, "entries": [...]})."""
    try:
        with open(manifest_path) as f:
            return json.load(f)["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _log(cache: str, what: str, obj: str, key: str) -> None:
    with open(os.path.join(cache, "log.txt"), "a") as f:
        f.write(f"{what} {obj} {key[:16]}\n")


class _Compile:
    """One nvcc command as the cache sees it: its key, manifest and where its outputs go."""

    def __init__(self, compiler: str, args: list[str], cache: str, strict: bool):
        self.cache, self.strict = cache, strict
        tokens = _tokens(args)
        opts = dict(tokens)
        self.out, self.depfile, source = opts.get("-o"), opts.get("-MF"), opts.get("-c")
        self.paths = Paths(tokens, os.getcwd(), compiler)
        source_sha = _file_sha(source) if source else None
        self.usable = bool(self.out and self.depfile and source_sha and self.paths.complete())
        if not self.usable:
            return  # not a libflashgen compile: no caching
        # The host compiler by its version (_host_compiler), wherever and however it is named.
        ccbin = next((val for opt, val in tokens if opt == "-ccbin"), None)
        tokens = [(opt, val) for opt, val in tokens if opt != "-ccbin"] + [("-ccbin", _host_compiler(ccbin))]
        keyed = [f"{opt} {self.paths.normalize_token(val)}" if opt != "-MT" else opt for opt, val in tokens]
        # The toolkit's include directories (Paths: <CUDA>) are implicit to nvcc, and CMake
        # versions differ in which they spell out (4.2 adds <CUDA>/cccl): they stand behind the
        # release line.
        includes = [k for k in keyed
                    if k.startswith(("-I ", "-isystem ")) and not k.split(" ", 1)[1].startswith("<CUDA>")]
        others = sorted(k for k in keyed if not k.startswith(("-I ", "-isystem ")))  # CMake versions reorder
        self.argv, self.compiler = args, compiler  # as given, for the miss report
        self.material = [_nvcc_release(compiler), includes, others, source_sha]
        # nvcc also reads flags from the environment; keyed only when set (keys stay the same).
        nvcc_env = [f"{v}={os.environ[v]}" for v in ("NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS") if os.environ.get(v)]
        if nvcc_env:
            self.material.append(nvcc_env)
        self.key = _sha(json.dumps(self.material).encode())
        self.manifest = os.path.join(cache, "m", self.key + ".json")
        self.name = os.path.basename(self.out)
        self.mismatches: list[str | None] = []  # per earlier entry, the first header that differs

    def lookup(self) -> bool:
        """Serve the object of an earlier compile whose headers all match here; False: none does."""
        here: dict[str, str | None] = {}  # entries share most headers: hash each once

        def sha_here(placeholder: str) -> str | None:
            if placeholder not in here:
                here[placeholder] = _file_sha(self.paths.local(placeholder))
            return here[placeholder]

        for entry in _load(self.manifest):
            differs = next((d for d, sha in entry["deps"].items() if sha_here(d) != sha), None)
            self.mismatches.append(differs)
            if differs is not None:
                continue
            data = _read_object(os.path.join(self.cache, "o", entry["object"]))
            if data is None or _sha(data) != entry["object"].split(".")[0]:
                continue
            _write_atomic(os.path.abspath(self.out), data)
            with open(self.depfile, "w") as f:
                f.write(f"{self.out}: {' '.join(self.paths.local(d) for d in entry['deps'])}\n")
            _log(self.cache, "hit", self.name, self.key)
            return True
        return False

    def store(self) -> None:
        """Record a compile that just succeeded: its headers (from the depfile) and its object."""
        deps = {}
        for dep in _read_depfile(self.depfile):
            placeholder = self.paths.normalize(dep)
            if placeholder is None or (placeholder.startswith("<CUDA>") and not self.strict):
                continue  # system / host-compiler / toolkit headers: not checked (see the docstring)
            sha = _file_sha(dep)
            if sha is None:
                return  # a header vanished mid-build: do not record this compile
            deps[placeholder] = sha
        with open(self.out, "rb") as f:
            data = f.read()
        # CuTe objects compress ~8x (more of them fit a carry); plain where Python lacks lzma.
        obj_name = _sha(data) + (".o.xz" if lzma else ".o")
        if not os.path.exists(os.path.join(self.cache, "o", obj_name)):
            _write_atomic(os.path.join(self.cache, "o", obj_name), lzma.compress(data) if lzma else data)
        os.makedirs(os.path.dirname(self.manifest), exist_ok=True)
        with open(self.manifest + ".lock", "w") as lock:  # parallel builds (A / B sides) share keys
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = [e for e in _load(self.manifest) if e["deps"] != deps] + [{"deps": deps, "object": obj_name}]
            manifest = {"key": self.material, "entries": entries[-16:]}
            _write_atomic(self.manifest, json.dumps(manifest, indent=0).encode())
        # What the key was made of, to compare with the other machine's when a hit was expected.
        report = {"key": self.material, "earlier entries differ in": self.mismatches, "argv": self.argv,
                  "compiler": os.path.realpath(self.compiler)}
        _write_atomic(os.path.join(self.cache, "k", self.key[:16] + ".json"), json.dumps(report, indent=1).encode())
        _log(self.cache, "miss", self.name, self.key)


def run(argv: list[str], cache: str | None, strict: bool = False) -> int:
    """Compile argv through the cache. A failure of the cache itself (a damaged entry, a full
    disk) is reported on stderr and the compile goes on without it: never a failed build."""
    compiler, args = argv[0], argv[1:]
    job = None
    if cache:
        try:
            job = _Compile(compiler, args, cache, strict)
            if job.usable and job.lookup():
                return 0
        except Exception as e:  # noqa: BLE001 - the cache must never break a build
            print(f"objcache: lookup failed ({e!r}); compiling", file=sys.stderr)
            job = None
    rc = subprocess.call([compiler, *args])
    if rc == 0 and job is not None and job.usable:
        try:
            job.store()
        except Exception as e:  # noqa: BLE001
            print(f"objcache: could not store {job.name} ({e!r})", file=sys.stderr)
    return rc


def prune(cache: str, since_line: int) -> str:
    """Keep only the keys that log.txt names after its first since_line lines (e.g. the builds of
    a final check that hit everything the next device calls need), and the objects they use;
    clears the miss reports and the log. Returns a summary line."""
    with open(os.path.join(cache, "log.txt")) as f:
        used = {line.split()[2] for line in f.read().splitlines()[since_line:] if len(line.split()) == 3}
    keep_objects, dropped = set(), 0
    for name in os.listdir(os.path.join(cache, "m")):  # manifests and their .lock files
        path = os.path.join(cache, "m", name)
        if name.endswith(".json") and name[:16] in used:
            keep_objects |= {e["object"] for e in _load(path)}
        else:
            os.remove(path)
            dropped += name.endswith(".json")
    for name in os.listdir(os.path.join(cache, "o")):
        if name not in keep_objects:
            os.remove(os.path.join(cache, "o", name))
    shutil.rmtree(os.path.join(cache, "k"), ignore_errors=True)
    open(os.path.join(cache, "log.txt"), "w").close()
    size = sum(os.path.getsize(os.path.join(cache, "o", n)) for n in os.listdir(os.path.join(cache, "o")))
    return f"kept {len(used)} keys and {len(keep_objects)} objects ({size / 2**20:.1f} MiB), dropped {dropped} keys"


def compare(cache: str, report_path: str) -> str:
    """Why a compile missed on another machine: its miss report (k/<key16>.json, which the GPU
    scripts return in $OUT/objcache_keys.tgz) against this cache's manifests of the same source."""
    with open(report_path) as f:
        report = json.load(f)
    theirs, lines = report["key"], []
    for name in sorted(n for n in os.listdir(os.path.join(cache, "m")) if n.endswith(".json")):
        with open(os.path.join(cache, "m", name)) as f:
            ours = json.load(f)["key"]
        if ours[3] != theirs[3]:
            continue  # another source file (the key's fourth part is the source's sha256)
        if ours == theirs:
            lines.append(f"{name[:16]}: same key; the entries differ in {report['earlier entries differ in']}")
            continue
        diff = [f"{part}: only here {sorted(set(a) - set(b))}, only there {sorted(set(b) - set(a))}"
                if isinstance(a, list) else f"{part}: here {a!r}, there {b!r}"
                for part, a, b in zip(("nvcc", "includes", "flags"), ours, theirs) if a != b]
        lines.append(f"{name[:16]}: " + "; ".join(diff))
    return "\n".join(lines) or "no manifest here compiled the same source"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:  # tools/objcache.py --compare REPORT.json [CACHE]
        print(compare(sys.argv[3] if len(sys.argv) > 3 else os.environ["FLASHGEN_OBJCACHE"], sys.argv[2]))
        sys.exit(0)
    if sys.argv[1:2] == ["--prune-since"]:  # tools/objcache.py --prune-since LINE [CACHE]
        print(prune(sys.argv[3] if len(sys.argv) > 3 else os.environ["FLASHGEN_OBJCACHE"], int(sys.argv[2])))
        sys.exit(0)
    strict_toolkit = os.environ.get("FLASHGEN_OBJCACHE_STRICT") == "1"
    sys.exit(run(sys.argv[1:], os.environ.get("FLASHGEN_OBJCACHE"), strict_toolkit))
