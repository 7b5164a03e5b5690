"""The data-roots guard: task arguments may only name files under TASKS_DATA_ROOTS.

Whoever can enqueue a task must not be able to read, overwrite or unpickle arbitrary
files, so every path argument is resolved (``..`` collapsed, symlinks followed) and the
real path must lie inside one of the configured roots.
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.errors import InvalidInput
from tasks.settings import settings

# process_new_data moves each file it takes into <inbox_dir>/.claimed/<its task id>/;
# cleanup_old_results removes those files once they are old.
CLAIMED_DIR = ".claimed"


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def guarded_path(raw: str, *, must_exist: bool = False, what: str = "path") -> Path:
    """Return the resolved path, or raise InvalidInput if it leaves the data roots."""
    if not isinstance(raw, str | os.PathLike) or not str(raw):
        raise InvalidInput(f"{what} must be a non-empty path string, got {raw!r}")
    roots = [Path(root).resolve() for root in settings().data_roots]
    resolved = Path(os.path.abspath(raw)).resolve()
    if not any(_within(resolved, root) for root in roots):
        allowed = ":".join(str(root) for root in roots)
        raise InvalidInput(
            f"{what} {raw!r} resolves to {resolved}, outside the data roots {allowed} "
            "(TASKS_DATA_ROOTS); put the file under one of them"
        )
    if must_exist and not resolved.exists():
        raise InvalidInput(f"{what} {raw!r} does not exist")
    return resolved


def model_file(raw: str) -> Path:
    """A model to unpickle: an existing file under models_dir, since unpickling runs code."""
    path = guarded_path(raw, must_exist=True, what="model_path")
    models = Path(settings().models_dir).resolve()
    if not _within(path, models):
        raise InvalidInput(
            f"model_path {raw!r} resolves to {path}, outside the models dir {models} "
            "(models_dir): models are unpickled only from there; train or copy it there"
        )
    return path


def output_path(raw: str, what: str = "output_path") -> Path:
    """A guarded path to write to; its directory is created if missing."""
    path = guarded_path(raw, what=what)
    if path.is_dir():
        raise InvalidInput(f"{what} {raw!r} is a directory; name a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_write(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; rename it into place only on success.

    Readers never see a half-written output, and a failed task leaves no debris.
    """
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def output_dir(raw: str, what: str = "output_dir") -> Path:
    """A guarded directory to write into, created if missing."""
    path = guarded_path(raw, what=what)
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{what} {raw!r} is a file; name a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path
