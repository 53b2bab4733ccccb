"""Fusing a run of kernel effects into one compiled call per block.

Calling a numba kernel from Python costs a few microseconds however small the block: the call
itself, unboxing each state array, and the Chain's bookkeeping around it. At 64..256 frames
that is most of what a filter or a compressor costs. So for every run of consecutive effects
that implement :meth:`Effect.kernel <hushbridge.effects.base.Effect.kernel>`,
a :class:`~hushbridge.effects.Chain` generates one ``@njit`` function that does for those slots
exactly what :meth:`Chain.process` does slot by slot (dry delay line, bypass crossfade, the
kernel, the non-finite check) and calls it once per block. The output is bit-identical to the
slot-by-slot path, which still runs whenever an effect in the run asks for Python
(``python_needed``), while per-effect timing is on, or for blocks that are not C-contiguous
float32.

The state arrays reach the compiled code as raw addresses rebuilt with :func:`numba.carray`,
so a call unboxes four arrays however many effects and arrays the run has; the run keeps a
reference to every array, and an effect may replace its arrays only in ``_prepare`` (after
which the Chain fuses again).

The generated source is written to a file in the user cache folder (``HUSHBRIDGE_FUSED_DIR`` to
move it), named by a hash of the source and of the kernels' modules, so numba caches its
machine code like any kernel's, and an edited kernel never runs stale fused code. The first
prepare of a new combination compiles it (1-2 s per effect); later ones, in this or
any later process, load it from the cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import typeof
from numba.core import cgutils, types
from numba.extending import intrinsic

from hushbridge.effects.base import Effect

log = logging.getLogger(__name__)
_BLOCK_T = typeof(np.zeros((1, 1), dtype=np.float32))
# every generated run() has this signature: block, check_input, addresses, ints, floats
SIGNATURE = (_BLOCK_T, numba.boolean, typeof(np.zeros(1, np.int64)), typeof(np.zeros(1, np.int64)),
             typeof(np.zeros(1, np.float64)))
_lock = threading.Lock()
_modules: dict[str, Any] = {}  # source hash -> imported module (one compile per process)


@dataclass(frozen=True)
class SlotState:
    """What the Chain keeps per slot, as the fused function reads and writes it."""

    effect: Effect
    mix: np.ndarray  # float64 [gain, target, step]
    line: np.ndarray  # float32 (channels, L) dry delay ring
    pos: np.ndarray  # int64 [write position]
    dry: np.ndarray  # float32 (channels * max_block) scratch for the delayed dry signal
    latency: int


@dataclass
class FusedRun:
    """One compiled call for the consecutive slots ``start .. start + len(effects) - 1``."""

    start: int
    effects: tuple[Effect, ...]
    #: ``entry(block, check_input, *args[:3])`` processes a C-contiguous float32 block and
    #: returns a bit mask: bit 0 when the input had non-finite samples (checked only with
    #: ``check_input``), bit ``k + 1`` when the run's ``k``-th effect produced some (the block
    #: was silenced there; the caller resets that effect). ``args[3]`` keeps the arrays alive.
    entry: Callable[..., int] = field(repr=False)
    args: tuple[Any, ...] = field(repr=False)
    #: the effects whose ``python_needed`` can become true (checked before every block)
    watch: tuple[Effect, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.watch = tuple(e for e in self.effects if type(e).python_needed is not Effect.python_needed)


def fusable(effect: Effect) -> bool:
    """Whether ``effect`` (prepared) can take part in a fused run: it runs one kernel whose
    arguments are C-contiguous arrays and scalars."""
    if getattr(effect, "_bound", None) is None:
        return False
    # a subclass that overrides process() does more than its kernel, unless the same class
    # says through python_needed when its process differs from the bare kernel
    owner = next(c for c in type(effect).__mro__ if "process" in c.__dict__)
    if owner is not Effect and "python_needed" not in owner.__dict__:
        return False
    try:
        for value in effect._bound[1]:
            _describe(value)
    except TypeError:
        return False
    return True


def _kernel_ref(kernel: Any) -> tuple[str, str, Path]:
    fn = kernel.py_func
    module = sys.modules[fn.__module__]
    if getattr(module, fn.__name__, None) is not kernel:
        raise TypeError(f"{fn.__module__}.{fn.__qualname__}: a fused kernel must be a module-level @njit function")
    path = Path(inspect.getfile(fn))
    if not path.is_absolute() and getattr(sys, "frozen", False):  # a frozen program's sources lie in its folder
        path = Path(getattr(sys, "_MEIPASS", "")) / path
    return fn.__module__, fn.__name__, path


@intrinsic
def address_as_pointer(typingctx, address):  # noqa: ARG001 - numba's intrinsic signature
    """The int64 ``address`` as a ``void*`` for :func:`numba.carray` (compiled code only)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@dataclass(frozen=True)
class _Arg:
    """How the generated code gets back one kernel argument: an array rebuilt from its
    address, or a scalar read from the int or float table."""

    kind: str  # "array", "int", "bool" or "float"
    dtype: str = ""  # numpy dtype name of an array
    ndim: int = 0


def _describe(value: Any) -> _Arg:
    if isinstance(value, np.ndarray):
        if not (value.flags.c_contiguous and value.flags.aligned and value.dtype.isnative):
            raise TypeError("a fused kernel's arrays must be C-contiguous, aligned and native")
        return _Arg("array", value.dtype.name, value.ndim)
    if isinstance(value, (bool, np.bool_)):
        return _Arg("bool")
    if isinstance(value, (int, np.integer)):
        return _Arg("int")
    if isinstance(value, (float, np.floating)):
        return _Arg("float")
    raise TypeError(f"a fused kernel cannot take {type(value).__name__} arguments")


def _source(refs: Sequence[tuple[str, str]], layouts: Sequence[Sequence[_Arg]]) -> str:
    """The module text: one ``run(block, check_input, addresses, ints, floats)``. Arrays are
    rebuilt with :func:`numba.carray` from ``addresses`` (shape from ``ints``), so one call
    unboxes four arrays however many effects and state arrays the run has."""
    lines = [
        "# Generated by hushbridge.effects.fused: one compiled call per block for a run of effects.",
        "import numpy as np",
        "from numba import carray, njit",
        "from hushbridge.dsp.kernels.util import delay_through, ramp_mix, sanitize",
        "from hushbridge.effects.fused import address_as_pointer",
    ]
    lines += [f"from {mod} import {name} as kernel_{k}" for k, (mod, name) in enumerate(refs)]
    lines += ["", "", "@njit(cache=True)", "def run(block, check_input, addresses, ints, floats):",
              "    ch, n = block.shape", "    bad = 0",
              "    if check_input and sanitize(block):", "        bad |= 1"]
    n_addr = n_int = n_float = 0

    def take(arg: _Arg) -> str:
        nonlocal n_addr, n_int, n_float
        if arg.kind == "array":
            shape = ", ".join(f"ints[{n_int + d}]" for d in range(arg.ndim))
            n_int += arg.ndim
            n_addr += 1
            return f"carray(address_as_pointer(addresses[{n_addr - 1}]), ({shape},), np.{arg.dtype})"
        if arg.kind == "float":
            n_float += 1
            return f"floats[{n_float - 1}]"
        n_int += 1
        return f"ints[{n_int - 1}]" + (" != 0" if arg.kind == "bool" else "")

    slot_args = (_Arg("array", "float64", 1), _Arg("array", "float32", 2), _Arg("array", "int64", 1),
                 _Arg("array", "float32", 1), _Arg("int"))
    for k, layout in enumerate(layouts):
        mix, line, pos, dry, latency = (take(a) for a in slot_args)
        lines += [f"    # slot {k}", f"    mix = {mix}", f"    line = {line}", f"    pos = {pos}",
                  f"    dry_all = {dry}", f"    latency = {latency}"]
        names = []
        for j, arg in enumerate(layout):
            lines.append(f"    a{j} = {take(arg)}")
            names.append(f"a{j}")
        lines += [
            "    m0 = mix[0]",
            "    fading = m0 != mix[1]",
            "    wet = m0 == 1.0 and not fading",
            "    dry = dry_all[: ch * n].reshape((ch, n))",
            "    active = True",
            "    if not wet or latency != 0:",
            "        pos[0] = delay_through(block, line, pos[0], latency, dry)",
            "        if m0 == 0.0 and not fading:",
            "            block[:, :] = dry",
            "            active = False",
            "    if active:",
            f"        kernel_{k}(block{''.join(', ' + a for a in names)})",
            "        if sanitize(block):",
            f"            bad |= {1 << (k + 1)}",
            "            block[:, :] = 0.0",
            "        if not wet:",
            "            ramp_mix(block, dry, mix)",
        ]
    lines += ["    return bad", ""]
    return "\n".join(lines)


def cache_dir() -> Path:
    env = os.environ.get("HUSHBRIDGE_FUSED_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("hushbridge")) / f"fused-numba{numba.__version__}"


def _module(source: str, kernel_files: Sequence[Path]) -> Any:
    from hushbridge.dsp import SOURCES_DIGEST

    h = hashlib.sha256(source.encode())
    # an edited kernel, or a kernel's callee in another file (hum -> biquad), gets a new file, so
    # numba never reuses stale code
    h.update(SOURCES_DIGEST.encode())
    for f in sorted(set(kernel_files)):
        h.update(f.read_bytes())
    key = h.hexdigest()[:20]
    with _lock:
        mod = _modules.get(key)
        if mod is not None:
            return mod
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"fused_{key}.py"
        if not path.exists() or path.read_text() != source:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, path)  # concurrent processes each write whole files
        spec = importlib.util.spec_from_file_location(f"hushbridge_fused_{key}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # numba's cache finds the module again by its name
        spec.loader.exec_module(mod)
        _modules[key] = mod
        return mod


def fuse(start: int, slots: Sequence[SlotState], compile: bool = True) -> FusedRun:  # noqa: A002
    """Compile (or load from the cache) one call for ``slots``, which all satisfy :func:`fusable`.
    With ``compile=False`` only a loaded or cached run is used, else :class:`NotCompiled`."""
    refs, files, layouts = [], [], []
    keep: list[Any] = []
    addresses: list[int] = []
    ints: list[int] = []
    floats: list[float] = []

    def put(value: Any) -> None:
        arg = _describe(value)
        if arg.kind == "array":
            keep.append(value)  # the run holds every array it points to
            addresses.append(value.ctypes.data)
            ints.extend(value.shape)
        elif arg.kind == "float":
            floats.append(float(value))
        else:
            ints.append(int(value))

    for s in slots:
        kernel, kargs = s.effect.kernel()  # type: ignore[misc]
        mod, name, path = _kernel_ref(kernel)
        refs.append((mod, name))
        files.append(path)
        layouts.append([_describe(a) for a in kargs])
        for value in (s.mix, s.line, s.pos, s.dry, int(s.latency), *kargs):
            put(value)
    module = _module(_source(refs, layouts), files)
    run = module.run
    tables = (np.array(addresses, dtype=np.int64), np.array(ints, dtype=np.int64),
              np.array(floats + [0.0], dtype=np.float64))
    if not compile and (tuple(SIGNATURE) not in run.overloads
                        and run._cache.load_overload(SIGNATURE, run.targetctx) is None):
        raise NotCompiled(module.__file__)
    entry = run.compile(SIGNATURE)
    return FusedRun(start, tuple(s.effect for s in slots), entry, (*tables, tuple(keep)))


class NotCompiled(Exception):
    """A fused run is neither loaded nor in the disk cache; ``args[0]`` is its module file."""


_jobs: dict[tuple[str, ...], subprocess.Popen[bytes]] = {}


def compile_in_background(paths: Sequence[str]) -> subprocess.Popen[bytes]:
    """A low-priority process that compiles the generated modules ``paths`` into the disk
    cache; one per set of files in this process (engines asking for the same set share it)."""
    key = tuple(sorted(set(paths)))
    with _lock:
        job = _jobs.get(key)
        if job is not None and (job.poll() is None or job.returncode == 0):
            return job
        nice = (lambda: os.nice(10)) if hasattr(os, "nice") else None  # leave the cores to audio
        job = subprocess.Popen([sys.executable, "-m", "hushbridge.effects.fused", *key],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=nice)  # noqa: PLW1509 - it only lowers the priority
        _jobs[key] = job
        return job


def compile_files(paths: Sequence[str | Path]) -> None:
    """Compile generated modules into the disk cache (what ``python -m hushbridge.effects.fused
    FILE...`` runs in a background process while the engine plays)."""
    for path in paths:
        path = Path(path)
        spec = importlib.util.spec_from_file_location(path.stem.replace("fused_", "hushbridge_fused_"), path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mod.run.compile(SIGNATURE)


def plan(slots: Sequence[SlotState], enabled: bool = True, compile: bool = True,  # noqa: A002
         missing: list[str] | None = None, alone: frozenset[int] = frozenset()) -> list[FusedRun | int]:
    """The units a Chain runs per block: a :class:`FusedRun` for every run of consecutive
    fusable effects (one alone too: the call still saves the Python around it), the slot index
    for every other effect and every slot in ``alone``. With ``compile=False`` a run that
    would need compiling stays slot by slot and its module file is appended to ``missing``."""
    units: list[FusedRun | int] = []
    k = 0
    while k < len(slots):
        j = k
        while enabled and j < len(slots) and j not in alone and fusable(slots[j].effect):
            j += 1
        if j > k:
            try:
                units.append(fuse(k, slots[k:j], compile=compile))
            except NotCompiled as e:
                if missing is not None:
                    missing.append(e.args[0])
                units.extend(range(k, j))
            except Exception as e:  # noqa: BLE001 - e.g. an unwritable cache folder: run unfused
                log.warning("cannot fuse %s (%s: %s); running them one by one",
                            ", ".join(s.effect.name for s in slots[k:j]), type(e).__name__, e)
                units.extend(range(k, j))
            k = j
        else:
            units.append(k)
            k += 1
    return units


if __name__ == "__main__":
    compile_files(sys.argv[1:])
