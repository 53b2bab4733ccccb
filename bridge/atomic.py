"""Atomic file replacement: write beside the target, rename over it only on success.

A temporary file from :func:`tempfile.mkstemp` is private (mode 0600) so that nobody reads it
half-written; renamed as it is, the finished file would stay private. :func:`temp_beside` gives
it, before anything is written, the mode the target would get anyway: the mode of the file it
replaces, or 0666 minus the umask for a new one, as ``open()`` would create it.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask() would race with other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(target: str | os.PathLike[str]) -> int:
    """The permission bits ``target`` ends up with: its current ones if it exists, else 0666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def through_links(target: str | os.PathLike[str]) -> Path:
    """The file a write to ``target`` should replace: ``target`` itself, or where a symbolic link
    there points (renaming over the link would leave the file it names stale and unlink it)."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


#: every temporary file :func:`temp_beside` made in this process, named before it exists: a
#: SIGTERM can land between the file's creation and the moment its caller holds the name (inside
#: ``os.open``'s return, a ``str()`` around the result), where no ``except`` of the caller can
#: remove it; :func:`remove_leftovers` does, when the signal has unwound the command (seen once
#: in CI under load: a hidden ``.o.*.part.wav`` left after SIGHUP)
_made: set[str] = set()


def temp_beside(target: str | os.PathLike[str], tag: str = "part") -> Path:
    """An empty temporary file in ``target``'s folder, named ``.<stem>.<random>.<tag><suffix>``
    (hidden, same extension, so format detection by extension still works), with the mode
    :func:`new_file_mode` gives. The caller renames it over ``target`` (``os.replace``) or
    removes it."""
    target = Path(target)
    names = tempfile._get_candidate_names()  # mkstemp's own random names
    for _ in range(tempfile.TMP_MAX):
        name = os.path.join(os.path.abspath(target.parent), f".{target.stem}.{next(names)}.{tag}{target.suffix}")
        _made.add(name)  # before the file exists: see _made
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            _made.discard(name)  # someone else's
            continue
        break
    else:  # pragma: no cover - as mkstemp
        raise FileExistsError(f"no usable temporary name in {target.parent}")
    try:
        os.fchmod(fd, new_file_mode(target))
    except BaseException:  # a failure, or Ctrl-C / SIGTERM, before the caller knows the name
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


def remove_leftovers() -> list[str]:
    """Remove the temporary files of :func:`temp_beside` still there (for a command that a signal
    ends: every one is unfinished then); returns their names."""
    gone = []
    for name in list(_made):
        try:
            os.unlink(name)
            gone.append(name)
        except FileNotFoundError:
            pass  # renamed over its target, or removed by its caller
        except OSError:
            continue
        _made.discard(name)
    return gone


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` (or the file it links to) through a temporary file,
    fsynced, then renamed."""
    target = through_links(target)
    tmp = temp_beside(target)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
