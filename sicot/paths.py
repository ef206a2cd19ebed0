"""Paths on any file system `tf.io.gfile` and Beam's `FileSystems` read: local folders and
URLs with a scheme (`gs://bucket/key`, `ram://...`, `s3://...`).

Local paths keep their full POSIX meaning (resolved, symlinks followed). A URL is treated as
an object-store key: no symlinks, `..` and `.` segments and repeated slashes normalised
textually, "inside a folder" meaning the same scheme and bucket and a key under the
folder's key.
"""
from __future__ import annotations

import os
import posixpath
import re

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://([^/]*)(/.*)?$")


def is_remote(path) -> bool:
    """Whether `path` is a URL with a scheme (gs://, ram://...) rather than a local path."""
    return _URL.match(str(path)) is not None


def absolute(path) -> str:
    """A local path made absolute; a URL normalised (see `normalize_url`)."""
    path = str(path)
    return normalize_url(path) if is_remote(path) else os.path.abspath(path)


def normalize_url(url: str) -> str:
    """`gs://b/a//b/../c/` -> `gs://b/a/c` (key normalised, no trailing slash)."""
    scheme, bucket, key = _URL.match(url).groups()
    key = posixpath.normpath(key or "/").lstrip("/")  # (normpath keeps a leading "//")
    key = "/" + key if key and key != "." else ""
    return f"{scheme}://{bucket}{key}"


def is_inside(path: str, folder: str) -> bool:
    """Whether URL `path` is `folder` or under it (both normalised; same scheme and bucket)."""
    if not (is_remote(path) and is_remote(folder)):
        return False
    path, folder = normalize_url(path), normalize_url(folder)
    return path == folder or path.startswith(folder + "/")


def join_url(folder: str, relative: str) -> str:
    """`relative` joined to URL `folder` and normalised; the caller checks `is_inside`."""
    return normalize_url(folder.rstrip("/") + "/" + relative)


# ---------------------------------------------------------------------------------------------
# Reading and writing. URLs of the object stores Beam has its own clients for (gs://, s3://,
# hdfs://, azfs://) go through Beam's `FileSystems` (on GCS: the google-cloud-storage client,
# which a test can point at an emulator); every other path, local or `ram://`, through
# `tf.io.gfile`. Failures are raised as OSError naming the path.

_BEAM_SCHEMES = ("gs", "s3", "hdfs", "azfs")


def _uses_beam(path) -> bool:
    match = _URL.match(str(path))
    return match is not None and match.group(1) in _BEAM_SCHEMES


def _error(path, e):
    message = getattr(e, "message", None) or str(e)
    return OSError(f"{path}: {message.splitlines()[0] if message else type(e).__name__}")


def read_bytes(path) -> bytes:
    path = str(path)
    try:
        if _uses_beam(path):
            from apache_beam.io.filesystem import CompressionTypes
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                return f.read()
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - Beam and TF raise their own error types
        raise _error(path, e) from e


def write_bytes(path, data: bytes) -> None:
    path = str(path)
    try:
        if _uses_beam(path):
            from apache_beam.io.filesystem import CompressionTypes
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                f.write(data)
            return
        import tensorflow as tf

        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(data)
    except Exception as e:  # noqa: BLE001
        raise _error(path, e) from e


def exists(path) -> bool:
    """Whether a file (or, for local and gfile paths, a folder) exists at `path`."""
    path = str(path)
    if _uses_beam(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def isdir(path) -> bool:
    """A folder: a local or gfile directory; in an object store, a prefix with objects."""
    path = str(path)
    if _uses_beam(path):
        return bool(glob(path.rstrip("/") + "/*", limit=1)) or bool(
            glob(path.rstrip("/") + "/**", limit=1))
    import tensorflow as tf

    return tf.io.gfile.isdir(path)


def size(path) -> int:
    path = str(path)
    try:
        if _uses_beam(path):
            from apache_beam.io.filesystems import FileSystems

            return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        import tensorflow as tf

        return tf.io.gfile.stat(path).length
    except Exception as e:  # noqa: BLE001
        raise _error(path, e) from e


def glob(pattern, limit=None) -> list[str]:
    pattern = str(pattern)
    if _uses_beam(pattern):
        from apache_beam.io.filesystems import FileSystems

        result = FileSystems.match([pattern], limits=[limit] if limit else None)[0]
        return sorted(m.path for m in result.metadata_list)
    import tensorflow as tf

    found = sorted(tf.io.gfile.glob(pattern))
    return found[:limit] if limit else found


def copy(source, destination) -> None:
    write_bytes(destination, read_bytes(source))
