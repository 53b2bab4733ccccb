"""The kernels' disk cache goes stale when a callee in another file changes (numba alone checks
only the function's own file: an updated checkout ran the old biquad inside humremove)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from hushbridge.dsp import SOURCES_DIGEST
from hushbridge.dsp.jit_cache import SourcesStampedLocator, sources_digest

CALLER = """
from numba import njit
from stamped.callee import step

@njit(cache=True)
def run(x):
    return step(x) * 10
"""


def _call(root: Path, watched: bool) -> int:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(root)!r})
        from hushbridge.dsp.jit_cache import watch
        if {watched!r}:
            watch({str(root / 'stamped')!r})
        from stamped.caller import run
        print(run(1))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def _package(root: Path, step: int) -> None:
    pkg = root / "stamped"
    pkg.mkdir(exist_ok=True)
    if not (pkg / "caller.py").exists():  # the caller's file stays as it is: only the callee's changes
        (pkg / "__init__.py").write_text("")
        (pkg / "caller.py").write_text(CALLER)
    (pkg / "callee.py").write_text(f"from numba import njit\n\n@njit(cache=True)\ndef step(x):\n    return x + {step}\n")


def test_a_changed_callee_recompiles_its_cached_callers(tmp_path):
    _package(tmp_path, 1)
    assert _call(tmp_path, watched=True) == 20  # compiled and cached
    assert list((tmp_path / "stamped" / "__pycache__").glob("caller.run-*.nbi"))
    _package(tmp_path, 10)  # another size too: Python's own .pyc check (mtime in seconds, size) must see it
    assert _call(tmp_path, watched=True) == 110


def test_numba_alone_keeps_the_stale_callee(tmp_path):
    """What the stamp is for: without it the caller's cache holds the old callee."""
    _package(tmp_path, 1)
    assert _call(tmp_path, watched=False) == 20
    _package(tmp_path, 10)
    assert _call(tmp_path, watched=False) == 20


def test_the_kernels_are_stamped_with_the_digest_of_the_dsp_sources():
    from hushbridge.dsp.kernels.hum import hum_remover

    locator = hum_remover._cache._impl.locator
    assert isinstance(locator, SourcesStampedLocator)
    assert locator.get_source_stamp() == ("hushbridge-sources", SOURCES_DIGEST)
    import hushbridge.dsp

    assert SOURCES_DIGEST == sources_digest(Path(hushbridge.dsp.__file__).resolve().parent)
