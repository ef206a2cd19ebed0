"""`read_torch_state_dict`: a PyTorch state dict file (legacy, non-zip format) as numpy arrays,
without PyTorch and without running anything the file asks for.

The legacy format (`torch.save(..., _use_new_zipfile_serialization=False)`, and every `.pth`
written before PyTorch 1.6) is a sequence of pickles followed by raw data:

  1. the magic number 0x1950a86a20f9469cfc6c, 2. the protocol version 1001, 3. a sys-info dict
  (byte order, type sizes), 4. the state dict itself, whose tensors are
  `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls on storages given
  as persistent ids `("storage", torch.FloatStorage, key, location, numel, view_metadata)`,
  5. the list of storage keys in the order their data follows, 6. for each key: an 8-byte
  little-endian element count and the raw little-endian elements.

A pickle can call any importable function, so the unpickler resolves only the names such a
file needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the `torch.*Storage`
types) and maps each to a local stand-in; anything else (`os.system`, `builtins.eval`, ...) is
refused with a ValueError naming it, before it is called.
"""
from __future__ import annotations

import collections
import os
import pickle
import struct

import numpy as np

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"

# `torch.<Name>Storage` -> the little-endian numpy dtype of its elements. These names resolve to
# dtype tokens, never to callables, so accepting the common numeric types costs no safety.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class RefusedPickleName(ValueError):
    """The file's pickle asks for a name outside the allowed set."""


class _StorageType:
    """Stand-in for a `torch.<Name>Storage` class: only its element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _StorageRef:
    """A storage named by a persistent id; its data is read after the pickles."""

    def __init__(self, key: str, storage_type: _StorageType, numel: int, view):
        self.key = key
        self.storage_type = storage_type
        self.numel = numel
        self.view = view  # None, or (view_key, offset, view_numel) of a view of a root storage


class _TensorRef:
    """A tensor awaiting its storage's data: `_rebuild_tensor_v2`'s arguments."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("_rebuild_tensor_v2: the storage is not a persistent id")
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride)) \
            or len(size) != len(stride):
        raise pickle.UnpicklingError(
            f"_rebuild_tensor_v2: bad offset/size/stride {storage_offset}/{size}/{stride}")
    return _TensorRef(storage, storage_offset, size, stride)


def _allowed_globals():
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    }
    for name in _STORAGE_DTYPES:
        allowed[("torch", name)] = _StorageType(name)
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names of `_ALLOWED_GLOBALS`; storages become `_StorageRef`s."""

    def __init__(self, file, path):
        super().__init__(file)
        self._path = path
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickleName(
                f"{self._path}: refusing to load {module}.{name}: a PyTorch state dict file "
                "needs only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and "
                "torch.*Storage; this file asks for more (not a plain state dict, or "
                "malicious)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view = pid
        if view is not None:
            if not (isinstance(view, tuple) and len(view) == 3
                    and all(isinstance(v, int) for v in view[1:])):
                raise pickle.UnpicklingError(f"unexpected view metadata {view!r}")
        root = self.storages.setdefault(key, _StorageRef(key, storage_type, numel, None))
        if root.storage_type is not storage_type or root.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is declared twice, differently")
        if view is None:
            return root
        view_key, view_offset, view_numel = view
        if view_offset + view_numel > numel:
            raise pickle.UnpicklingError(f"view {view_key!r} runs past storage {key!r}")
        return _StorageRef(view_key, storage_type, view_numel, (key, view_offset, view_numel))


def _read_exact(f, n, path, what):
    left = os.fstat(f.fileno()).st_size - f.tell()
    if n > left:  # checked first: a corrupt count must not allocate terabytes
        raise ValueError(f"{path}: truncated PyTorch file: {what} needs {n} bytes, "
                         f"{left} left")
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{path}: truncated PyTorch file: {what} needs {n} bytes, "
                         f"{len(data)} left")
    return data


def _tensor_array(tensor: _TensorRef, data: dict[str, np.ndarray], key: str, path) -> np.ndarray:
    storage = tensor.storage
    if storage.view is None:
        flat = data[storage.key]
    else:
        root_key, view_offset, view_numel = storage.view
        flat = data[root_key][view_offset:view_offset + view_numel]
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if any(n == 0 for n in tensor.size):
        return np.zeros(tensor.size, flat.dtype.newbyteorder("="))
    if last >= flat.size:
        raise ValueError(f"{path}: tensor {key!r} (offset {tensor.offset}, size {tensor.size}, "
                         f"stride {tensor.stride}) runs past its storage of {flat.size} elements")
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset:], shape=tensor.size,
        strides=tuple(s * itemsize for s in tensor.stride), writeable=False)
    # A copy in native byte order: C-contiguous, independent of the (shared) storage.
    # (Not np.ascontiguousarray: it turns a 0-d tensor such as num_batches_tracked into 1-d.)
    return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C", copy=True)


def _unpickle(f, path, what):
    unpickler = _RestrictedUnpickler(f, path)
    try:
        return unpickler.load(), unpickler
    except RefusedPickleName:
        raise
    except EOFError:
        raise ValueError(f"{path}: truncated PyTorch file: ends inside the {what}") from None
    except Exception as e:  # a corrupt pickle raises any of a dozen types
        raise ValueError(f"{path}: not a readable PyTorch legacy file: bad {what} ({e})") from None


def read_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict saved in the legacy (non-zip) format.

    Args:
      path: str or os.PathLike, a local file.

    Returns:
      dict key -> numpy array (C-contiguous, native byte order, dtype of the storage), in the
      file's order. Integer buffers such as `num_batches_tracked` are included (int64, shape ()).

    Raises:
      ValueError naming `path`: not a legacy PyTorch file (a zip-format file included), a
        truncated or corrupt one, one that is not a dict of tensors, or one whose pickle asks
        for any name outside the allowed set (the refused `module.name` is in the message;
        nothing of the file is executed).
    """
    with open(path, "rb") as f:
        head = f.read(4)
        if head == _ZIP_MAGIC:
            raise ValueError(f"{path}: a zip-format PyTorch file; only the legacy (non-zip) "
                             "format is readable without PyTorch here")
        f.seek(0)
        magic, _ = _unpickle(f, path, "magic number")
        if magic != _MAGIC_NUMBER:
            raise ValueError(f"{path}: not a PyTorch legacy file (magic number {magic!r})")
        protocol, _ = _unpickle(f, path, "protocol version")
        if protocol != _PROTOCOL_VERSION:
            raise ValueError(f"{path}: unknown PyTorch file protocol version {protocol!r}")
        sys_info, _ = _unpickle(f, path, "sys info")
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise ValueError(f"{path}: unsupported sys info {sys_info!r} (big-endian data?)")
        state, unpickler = _unpickle(f, path, "state dict")
        if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, _TensorRef) for k, v in state.items()):
            raise ValueError(f"{path}: not a state dict (a dict of name -> tensor)")
        keys, _ = _unpickle(f, path, "storage keys")
        if not isinstance(keys, list) or sorted(keys) != sorted(unpickler.storages):
            raise ValueError(f"{path}: the storage key list does not match the tensors' storages")
        data: dict[str, np.ndarray] = {}
        for key in keys:
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", _read_exact(f, 8, path, f"storage {key!r} header"))
            if count != storage.numel:
                raise ValueError(f"{path}: storage {key!r} has {count} elements, the state dict "
                                 f"says {storage.numel}")
            raw = _read_exact(f, count * storage.storage_type.dtype.itemsize, path,
                              f"storage {key!r}")
            data[key] = np.frombuffer(raw, dtype=storage.storage_type.dtype)
        return {k: _tensor_array(t, data, k, path) for k, t in state.items()}

