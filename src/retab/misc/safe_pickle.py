"""Reading `.npy` files, the published pickled dicts included, without running code from them.

numpy's pickle-enabled load unpickles whatever a file names: an object whose `__reduce__` calls
`os.system` runs it. `load_npy` reads plain arrays with allow_pickle=False and unpickles
object arrays (the published CAM, CRF and score dicts, `cls_labels.npy`, name lists) with
`RestrictedUnpickler`, which resolves only the globals that numpy arrays and scalars need (and,
for IRN's files, torch tensors, their storages read with `weights_only=True`). Any other global is
refused before anything is called; the containers themselves (dict, list, tuple, str, numbers)
are pickle opcodes that call nothing.
"""
from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path

import numpy as np

from retab.misc.errors import RetabError

try:  # numpy >= 2 keeps its internals in numpy._core; numpy.core is a deprecated alias
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

ALLOWED_TYPES = "numpy arrays and scalars, dicts, lists, tuples, numbers and strings"

# (module, name) -> the object; files written by numpy 1.x name numpy.core, by numpy 2.x numpy._core
_NUMPY_GLOBALS = {}
for _module in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_module}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _NUMPY_GLOBALS[(f"{_module}.multiarray", "scalar")] = _multiarray.scalar
    _NUMPY_GLOBALS[(f"{_module}.numeric", "_frombuffer")] = _numeric._frombuffer  # pickle protocol 5
_NUMPY_GLOBALS.update({
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): lambda text, encoding="latin1": text.encode(encoding),  # bytes in protocol <= 2
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
})
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
# for torch.serialization.safe_globals: what a numpy array of a standard dtype pickles to
NUMPY_ARRAY_GLOBALS = [_multiarray._reconstruct, np.ndarray, np.dtype,
                       *{type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}]


def _storage_from_bytes(data: bytes):
    """torch's pickled storages hold a torch.save stream; read it with weights_only=True
    (torch's own `_load_from_bytes` would unpickle it without restriction)."""
    import torch

    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("a torch storage must be given as bytes")
    return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)


def _torch_globals() -> dict:
    import torch._utils

    return {("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
            ("torch.storage", "_load_from_bytes"): _storage_from_bytes}


class Refused(pickle.UnpicklingError):
    """A pickle named a global outside the allowed set; nothing of it was called."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.target = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals of numpy arrays and scalars (plus torch
    tensors with allow_torch) and refuses every other one."""

    def __init__(self, file, *, allow_torch: bool = False, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed = dict(_NUMPY_GLOBALS)
        if allow_torch:
            self.allowed.update(_torch_globals())

    def find_class(self, module, name):
        module = _PY2_MODULES.get(module, module)
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise Refused(module, name) from None

    def persistent_load(self, pid):
        raise Refused("persistent id", repr(pid)[:40])


def _array_header(fp):
    """(dtype) of the .npy header at the start of fp; fp is left at the start of the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)[2]
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)[2]
    return np.lib.format._read_array_header(fp, version)[2]  # 3.0 (utf-8 field names): no public reader


def load_npy(path, what: str, allow_torch: bool = False):
    """What numpy's pickle-enabled load returns for a `.npy` file, read without running code:
    a plain array as is, an object array through RestrictedUnpickler. `what` names the file's
    kind in errors; allow_torch also admits torch tensors (IRN's CAM files hold them)."""
    path = Path(path)
    if not path.is_file():
        raise RetabError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as fp:
            dtype = _array_header(fp)
            if not dtype.hasobject:
                fp.seek(0)
                return np.lib.format.read_array(fp, allow_pickle=False)
            # latin1, as numpy advises, also reads the arrays of files pickled by Python 2
            return RestrictedUnpickler(fp, allow_torch=allow_torch, encoding="latin1").load()
    except Refused as exc:
        raise RetabError(f"{path}: refused to read this {what}: its pickle calls {exc.target}, and only "
                         f"{ALLOWED_TYPES} are read (nothing in it was run)") from None
    except RetabError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad header, a truncated pickle: many kinds
        raise RetabError(f"{path}: not a readable .npy {what} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
