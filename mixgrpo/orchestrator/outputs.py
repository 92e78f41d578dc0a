"""Run outputs copied to ``run.output_uri`` (``s3://bucket/prefix``, ``gs://...``, ``file:///shared/runs`` or a
plain path) through pyarrow's filesystems, so a multi-node run does not depend on the head node's disk.

The driver calls ``push_outputs`` when the run directory is created, after every
checkpoint and at the end. Each push lists the destination once and copies the
files that are new there, differ in size, or changed since their copy; it never
deletes at the destination. Half-written staging files are skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.fs as pafs
from mixgrpo.errors import InputError

logger = logging.getLogger("mixgrpo.outputs")

_STAGING = (".writing-", ".replaced-", ".state-")


def destination(uri: str, run_name: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path where a run called ``run_name`` goes under ``uri``."""
    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    try:
        filesystem, base = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"run.output_uri {uri!r}: {error}") from None
    return filesystem, f"{base.rstrip('/')}/{run_name}"


def _local_files(run_dir: Path) -> dict[str, Path]:
    files = {}
    for path in run_dir.rglob("*"):
        relative = path.relative_to(run_dir).as_posix()
        staging = any(part.startswith(_STAGING) or part.endswith(".tmp") for part in relative.split("/"))
        if path.is_file() and not staging:
            files[relative] = path
    return files


def push_outputs(run_dir: Path, uri: str | None) -> int:
    """Copy what is new or changed in ``run_dir`` to ``uri``/<run dir name>; files copied (0 without a uri)."""
    if not uri:
        return 0
    filesystem, target = destination(uri, run_dir.resolve().name)
    filesystem.create_dir(target, recursive=True)
    present = {info.path[len(target) + 1:]: info for info in
               filesystem.get_file_info(pafs.FileSelector(target, recursive=True)) if info.type == pafs.FileType.File}
    local = pafs.LocalFileSystem()
    copied = 0
    for relative, path in sorted(_local_files(run_dir).items()):
        stat = path.stat()
        there = present.get(relative)
        if there is not None and there.size == stat.st_size and there.mtime_ns and there.mtime_ns >= stat.st_mtime_ns:
            continue
        parent = f"{target}/{relative}".rsplit("/", 1)[0]
        filesystem.create_dir(parent, recursive=True)
        pafs.copy_files(str(path.resolve()), f"{target}/{relative}", source_filesystem=local,
                        destination_filesystem=filesystem)
        copied += 1
    if copied:
        logger.info("copied %d file(s) of %s to %s", copied, run_dir, f"{uri.rstrip('/')}/{run_dir.resolve().name}")
    return copied
