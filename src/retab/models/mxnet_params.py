"""Pure-numpy reader of MXNet NDArray list files (`.params`), and the mapping of the ResNet-38
ImageNet parameter names onto the backbone's state-dict keys (SPEC 2).

File layout (little endian): uint64 list magic 0x112, uint64 reserved, uint64 array count, the
arrays, uint64 name count, the names (uint64 length + bytes). One array starts with a uint32:
- 0xF993FAC9 (V2) / 0xF993FACA (V3, written in NumPy-shape mode): int32 storage type, shape,
  context, int32 type flag, raw data;
- 0xF993FAC8 (V1): as V2 without the storage type;
- anything else: a legacy record whose first uint32 is ndim, with uint32 dims.
A shape is int32 ndim + int64 dims (legacy: uint32 dims); a context is int32 device type +
int32 device id. MXNet writes an "empty" array (unknown shape) as its shape alone.
"""
from __future__ import annotations

import logging
import math
import os
import re
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np

from retab.misc.errors import RetabError

log = logging.getLogger("retab")

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
DENSE_STORAGE = 0
MAX_LEGACY_NDIM = 32  # a larger "ndim" means the record is not an array at all
MIN_ARRAY_BYTES = 4  # the smallest array record: its magic (or legacy ndim 0) alone

TYPE_FLAGS = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
}


class _Reader:
    """Sequential little-endian reads that turn a short read into a RetabError naming the file.
    Every size read from a header is checked against the bytes the file has left before anything
    is allocated: a header claiming 2^48 elements is an error, not a MemoryError."""

    def __init__(self, fh, path):
        self.fh = fh
        self.path = path
        self.size = os.fstat(fh.fileno()).st_size

    def remaining(self) -> int:
        return self.size - self.fh.tell()

    def raw(self, nbytes: int, what: str) -> bytearray:
        left = self.remaining()
        if nbytes > left:
            raise RetabError(f"{self.path}: truncated or corrupt MXNet params file: {what} needs {nbytes} bytes, "
                             f"the file has {left} left")
        buf = bytearray(nbytes)
        got = self.fh.readinto(buf)
        if got != nbytes:
            raise RetabError(f"{self.path}: truncated MXNet params file "
                             f"(needed {nbytes} bytes for {what}, got {got})")
        return buf

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.raw(struct.calcsize("<" + fmt), what))

    def one(self, fmt: str, what: str):
        return self.unpack(fmt, what)[0]


def _read_shape(reader: _Reader, what: str, legacy_ndim: int | None = None):
    """Shape as a tuple; None when MXNet considers it unknown (the array is then empty)."""
    if legacy_ndim is not None:
        return reader.unpack(f"{legacy_ndim}I", what) if legacy_ndim else ()
    ndim = reader.one("i", what)
    if ndim <= 0:
        return () if ndim == 0 else None
    return reader.unpack(f"{ndim}q", what)


def _read_array(reader: _Reader, index: int) -> np.ndarray:
    what = f"array {index}"
    magic = reader.one("I", what)
    if magic in (V2_MAGIC, V3_MAGIC):
        stype = reader.one("i", what)
        if stype != DENSE_STORAGE:
            raise RetabError(f"{reader.path}: {what} has non-dense storage type {stype} "
                             f"(only dense arrays are supported)")
        shape = _read_shape(reader, what)
    elif magic == V1_MAGIC:
        shape = _read_shape(reader, what)
    elif magic <= MAX_LEGACY_NDIM:
        shape = _read_shape(reader, what, legacy_ndim=magic)
    else:
        raise RetabError(f"{reader.path}: {what} starts with unknown magic {magic:#x}")

    if _is_empty_record(magic, shape):
        return np.zeros((0,), np.float32)
    if any(d < 0 for d in shape):
        raise RetabError(f"{reader.path}: {what} has a negative dimension in shape {shape}")
    reader.unpack("ii", what + " context")
    flag = reader.one("i", what + " type flag")
    if flag not in TYPE_FLAGS:
        raise RetabError(f"{reader.path}: {what} has unknown type flag {flag}")
    dtype = TYPE_FLAGS[flag]
    count = math.prod(int(d) for d in shape)  # Python ints: np.prod would wrap around on a hostile shape
    data = reader.raw(count * dtype.itemsize, f"{what} data (shape {list(shape)})")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _is_empty_record(magic: int, shape) -> bool:
    """MXNet stores no context/type/data for an array of unknown shape: in NumPy-shape mode (V3)
    that is ndim -1 or a dim -1; otherwise ndim 0, and for V1/legacy also any zero dimension."""
    if shape is None:
        return True
    if magic == V3_MAGIC:
        return any(d == -1 for d in shape)
    if magic == V2_MAGIC:
        return len(shape) == 0
    return len(shape) == 0 or 0 in shape


def load_mxnet_params(path) -> "OrderedDict[str, np.ndarray]":
    """name -> array, in file order, names as stored (with their `arg:` / `aux:` prefix).
    A list saved without names gets the keys '0', '1', ..."""
    path = Path(path)
    if not path.is_file():
        raise RetabError(f"{path}: MXNet params file not found")
    with open(path, "rb") as fh:
        reader = _Reader(fh, path)
        magic, _reserved = reader.unpack("QQ", "the header")
        if magic != LIST_MAGIC:
            raise RetabError(f"{path}: not an MXNet params file (magic {magic:#x}, expected {LIST_MAGIC:#x})")
        count = reader.one("Q", "the array count")
        if count * MIN_ARRAY_BYTES > reader.remaining():
            raise RetabError(f"{path}: truncated or corrupt MXNet params file: its header claims {count} arrays, which need at "
                             f"least {count * MIN_ARRAY_BYTES} bytes; the file has {reader.remaining()} left")
        arrays = [_read_array(reader, i) for i in range(count)]
        name_count = reader.one("Q", "the name count")
        if name_count not in (0, count):
            raise RetabError(f"{path}: {name_count} names for {count} arrays")
        names = []
        for i in range(name_count):
            length = reader.one("Q", f"name {i} length")
            raw = reader.raw(length, f"name {i}")
            try:
                names.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise RetabError(f"{path}: name {i} is not valid UTF-8") from None
    if not names:
        names = [str(i) for i in range(count)]
    if len(set(names)) != len(names):
        raise RetabError(f"{path}: duplicate array names")
    return OrderedDict(zip(names, arrays))


# --- name mapping onto ResNet-38 keys -------------------------------------------------------

_BN_SUFFIX = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_UNIT_PARAM = re.compile(r"(res|bn)(\d)(a|b\d+)_(branch[0-9a-z]+)_(weight|gamma|beta|moving_mean|moving_var)")
_BN7_PARAM = re.compile(r"bn7_(gamma|beta|moving_mean|moving_var)")


def strip_prefix(name: str) -> str:
    for prefix in ("arg:", "aux:"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def mxnet_name_to_key(name: str) -> str | None:
    """Backbone state-dict key of an MXNet ResNet-38 parameter name; None for `linear1000_*`
    (the ImageNet classifier, not used). A name of no known form comes back unchanged (minus its
    prefix), so that loading reports it as unexpected."""
    name = strip_prefix(name)
    if name == "conv1a_weight":
        return "conv1a.weight"
    if name.startswith("linear1000_"):
        return None
    match = _BN7_PARAM.fullmatch(name)
    if match:
        return f"bn7.{_BN_SUFFIX[match.group(1)]}"
    match = _UNIT_PARAM.fullmatch(name)
    if match:
        kind, stage, unit, branch, param = match.groups()
        is_conv = kind == "res"
        if is_conv == (param == "weight"):  # convs have weights only, BNs never a plain 'weight'
            block = f"b{stage}" if unit == "a" else f"b{stage}_{unit[1:]}"
            layer = f"{'conv' if is_conv else 'bn'}_{branch}"
            return f"{block}.{layer}.{'weight' if is_conv else _BN_SUFFIX[param]}"
    return name


def mxnet_to_state_dict(params: dict) -> "OrderedDict[str, np.ndarray]":
    """Rename an MXNet ResNet-38 parameter dict to backbone keys, dropping `linear1000_*`."""
    out = OrderedDict()
    for name, array in params.items():
        key = mxnet_name_to_key(name)
        if key is None:
            log.debug("MXNet params: dropping %s (ImageNet classifier)", name)
            continue
        if key in out:
            raise RetabError(f"MXNet params: two parameters map to {key}")
        out[key] = array
    return out
