"""Numba's disk cache for hushbridge's kernels, made stale by any change to their sources.

Numba checks a cached function against its own file only (its mtime and size), while the machine
code it stores has its callees compiled in: ``hum_remover`` (``kernels/hum.py``) kept the old
``biquad_cascade`` of ``kernels/biquad.py`` after that file changed, so a checkout updated by
``git pull`` ran the old filter inside ``humremove`` and its output differed from a fresh
install's. Every cached function under a watched folder (this package) is stamped instead with
one digest of all the ``.py`` files there: a change to any of them recompiles them all, once.
The cache stays where numba would put it (``__pycache__`` beside the source, or numba's user
cache folder where that is not writable); ``NUMBA_CACHE_LOCATOR_CLASSES`` still overrides it.

:func:`watch` must run before the functions are decorated: :mod:`hushbridge.dsp` calls it for
itself when it is imported, before any kernel module.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba.core import caching

_digests: dict[Path, str] = {}  # watched folder -> digest of its sources (taken once per process)


def sources_digest(root: Path) -> str:
    """A digest of the names and contents of every ``.py`` file under ``root``."""
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        if "__pycache__" in f.parts:
            continue
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:24]


def _watched(py_file: str) -> Path | None:
    try:
        path = Path(os.path.realpath(py_file))
    except (OSError, ValueError):
        return None
    for root in _digests:
        if path.is_relative_to(root):
            return root
    return None


class SourcesStampedLocator(caching._CacheLocator):
    """Numba's own locator for the function (same folder), with the watched folder's digest as
    the source stamp (numba drops an index entry whose stamp differs and compiles again)."""

    def __init__(self, inner: caching._CacheLocator, digest: str) -> None:
        self._inner = inner
        self._digest = digest

    def ensure_cache_path(self) -> None:
        self._inner.ensure_cache_path()

    def get_cache_path(self) -> str:
        return self._inner.get_cache_path()

    def get_source_stamp(self) -> tuple[str, str]:
        return ("hushbridge-sources", self._digest)

    def get_disambiguator(self) -> str:
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):  # noqa: ANN001, ANN206 - numba's signature
        root = _watched(py_file)
        if root is None:
            return None
        for other in caching.CacheImpl._locator_classes:
            if other is cls:
                continue
            inner = other.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner, _digests[root])
        return None


def watch(root: Path | str) -> str:
    """Stamp the cache of every function defined under ``root`` from now on with the digest of
    ``root``'s sources; returns the digest."""
    root = Path(os.path.realpath(root))
    if root not in _digests:
        _digests[root] = sources_digest(root)
    classes = caching.CacheImpl._locator_classes
    if SourcesStampedLocator not in classes:
        classes.insert(0, SourcesStampedLocator)
    return _digests[root]


__all__ = ["SourcesStampedLocator", "sources_digest", "watch"]
