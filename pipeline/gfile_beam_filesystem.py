"""Beam `FileSystem`s for URL schemes TensorFlow reads but Beam does not: `ram://`.

A TFX run touches its data, pipeline root and serving dir both through `tf.io.gfile`
(TFX artifacts, Transform graphs, tf.data, SavedModels) and through Beam's `FileSystems`
(ExampleGen's splits, statistics, transformed examples, TFMA). Beam ships `gs://`, `s3://`,
`hdfs://` and `azfs://`; TensorFlow also has `ram://`, its in-process file system. This module
gives Beam that scheme with every call forwarded to `tf.io.gfile`, so that a whole pipeline
can run on a non-local scheme in one process (the tests do, on the DirectRunner, see
docs/pipeline.md for why this stands in for a GCS emulator on TensorFlow's side).

Importing the module registers the schemes (Beam finds `FileSystem` subclasses by scheme).
"""
from __future__ import annotations

import io
import posixpath

from apache_beam.io.filesystem import (BeamIOError, CompressedFile, CompressionTypes,
                                       FileMetadata, FileSystem)


class _GFileBeamFileSystem(FileSystem):
    """Beam FileSystem over `tf.io.gfile` for one URL scheme (subclasses set `_SCHEME`)."""

    _SCHEME = ""  # never a path's scheme (a local path's is None: that is LocalFileSystem's)

    @classmethod
    def scheme(cls):
        return cls._SCHEME

    @staticmethod
    def _gfile():
        import tensorflow as tf

        return tf.io.gfile

    def join(self, basepath, *paths):
        return posixpath.join(basepath.rstrip("/"), *paths)

    def split(self, path):
        head, tail = posixpath.split(path.rstrip("/"))
        return head, tail

    def mkdirs(self, path):
        gfile = self._gfile()
        if gfile.isdir(path):
            raise IOError(f"{path} already exists")
        gfile.makedirs(path)

    def has_dirs(self):
        return True

    def _list(self, dir_or_prefix):
        gfile = self._gfile()
        try:
            if not gfile.isdir(dir_or_prefix):
                return
            for folder, _, files in gfile.walk(dir_or_prefix):
                for name in files:
                    path = self.join(folder, name)
                    stat = gfile.stat(path)
                    yield FileMetadata(path, stat.length, stat.mtime_nsec / 1e9)
        except Exception as e:  # noqa: BLE001 - Beam's contract: BeamIOError on failure
            raise BeamIOError("List operation failed", {dir_or_prefix: e}) from e

    def _open(self, path, mode, compression_type):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        raw = self._gfile().GFile(path, mode)
        if "w" in mode:
            raw = _PositionCountingWriter(raw)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        parent = posixpath.dirname(path)
        if parent:
            self._gfile().makedirs(parent)
        return self._open(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        return self._open(path, "rb", compression_type)

    def _each(self, operation, name, sources, destinations):
        if len(sources) != len(destinations):
            raise BeamIOError(f"{name}: source and destination lists differ in length")
        exceptions = {}
        for source, destination in zip(sources, destinations):
            try:
                operation(source, destination)
            except Exception as e:  # noqa: BLE001
                exceptions[(source, destination)] = e
        if exceptions:
            raise BeamIOError(f"{name} operation failed", exceptions)

    def copy(self, source_file_names, destination_file_names):
        gfile = self._gfile()

        def copy_tree(source, destination):
            if gfile.isdir(source):
                for folder, _, files in gfile.walk(source):
                    relative = folder[len(source):].lstrip("/")
                    target = self.join(destination, relative) if relative else destination
                    gfile.makedirs(target)
                    for name in files:
                        gfile.copy(self.join(folder, name), self.join(target, name),
                                   overwrite=True)
            else:
                gfile.makedirs(posixpath.dirname(destination))
                gfile.copy(source, destination, overwrite=True)

        self._each(copy_tree, "Copy", source_file_names, destination_file_names)

    def rename(self, source_file_names, destination_file_names):
        gfile = self._gfile()

        def rename(source, destination):
            # Parent folders made explicitly: TF's ram:// lists only folders made with
            # makedirs, and TFT copies its outputs by listing them.
            gfile.makedirs(posixpath.dirname(destination))
            gfile.rename(source, destination, overwrite=True)

        self._each(rename, "Rename", source_file_names, destination_file_names)

    def exists(self, path):
        return self._gfile().exists(path)

    def size(self, path):
        try:
            return self._gfile().stat(path).length
        except Exception as e:  # noqa: BLE001
            raise BeamIOError("Size operation failed", {path: e}) from e

    def last_updated(self, path):
        try:
            return self._gfile().stat(path).mtime_nsec / 1e9
        except Exception as e:  # noqa: BLE001
            raise BeamIOError("Last updated operation failed", {path: e}) from e

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        gfile = self._gfile()
        exceptions = {}
        for path in paths:
            try:
                if gfile.isdir(path):
                    gfile.rmtree(path)
                else:
                    gfile.remove(path)
            except Exception as e:  # noqa: BLE001
                exceptions[path] = e
        if exceptions:
            raise BeamIOError("Delete operation failed", exceptions)


class _PositionCountingWriter(io.RawIOBase):
    """A GFile writer whose `tell()` Beam's sinks can call: ram:// writers do not support
    Tell() ("This filesystem does not support Tell()"), so the position is counted here."""

    def __init__(self, gfile):
        super().__init__()
        self._gfile = gfile
        self._position = 0
        self.mode = "wb"  # CompressedFile reads it

    def writable(self):
        return True

    def write(self, data):
        self._gfile.write(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self):
        return self._position

    def flush(self):
        if not self.closed:
            self._gfile.flush()

    def close(self):
        if not self.closed:
            self._gfile.close()
        super().close()


class RamBeamFileSystem(_GFileBeamFileSystem):
    """`ram://` (TensorFlow's in-process file system) for Beam: single-process runs only."""

    _SCHEME = "ram"
