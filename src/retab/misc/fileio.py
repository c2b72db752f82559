"""Every output goes through here: written to a temporary name beside the target, then renamed,
so an interrupted run never leaves a half-written file that a rerun would mistake for done."""
from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from retab.misc.errors import RetabError
from retab.misc.safe_pickle import load_npy

log = logging.getLogger("retab")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporaries `atomic_path` leaves beside `path` when a run is killed mid-write
    (`.{name}.XXXX.tmp`); call it only where no other process can be writing `path` now."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    for tmp in removed:
        log.info("removed %s, left by an interrupted write of %s", tmp, path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def append_text(path, text: str) -> None:
    """Append to a log: rewrite old content + new text atomically, so a crash loses nothing."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    write_bytes(path, old + text.encode())


def save_npy(path, obj) -> None:
    """np.save to `path` atomically; dicts are pickled as the published `.npy` dict files."""
    buf = io.BytesIO()
    if isinstance(obj, dict):
        np.save(buf, np.array(obj, dtype=object), allow_pickle=True)
    else:
        np.save(buf, obj)
    write_bytes(path, buf.getvalue())


def save_score_dict(path, scores: dict) -> None:
    """A CAM / score dict (SPEC 5): {int label: float32 HxW}."""
    save_npy(path, {int(k): np.asarray(v, np.float32) for k, v in scores.items()})


def load_pickled_dict(path, what: str, layout: str) -> dict:
    """The dict pickled in a `.npy` file, read without running code (retab.misc.safe_pickle);
    `what` names it and `layout` describes it in errors."""
    arr = load_npy(path, what)
    if not (isinstance(arr, np.ndarray) and arr.dtype == object and arr.shape == ()):
        raise RetabError(f"{path}: expected a pickled dict {layout}, got an array of shape {np.shape(arr)}")
    obj = arr.item()
    if not isinstance(obj, dict):
        raise RetabError(f"{path}: expected a dict {layout}, got {type(obj).__name__}")
    return obj


def load_score_dict(path) -> dict:
    return load_pickled_dict(path, "score dict", "label -> HxW map")


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_palette_png(path, labels: np.ndarray, palette: list[int]) -> None:
    """8-bit palette PNG (768 palette values); the stored values are the labels."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise RetabError(f"{path}: label map must be 2-D, got shape {labels.shape}")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette)
    write_bytes(path, _png_bytes(img))


def save_gray_png(path, values: np.ndarray) -> None:
    """8-bit greyscale PNG (boundary target maps: 255 non-boundary, 0 boundary)."""
    write_bytes(path, _png_bytes(Image.fromarray(np.asarray(values).astype(np.uint8), mode="L")))


def save_image(path, img: Image.Image, **kwargs) -> None:
    fmt = "JPEG" if str(path).lower().endswith((".jpg", ".jpeg")) else "PNG"
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    write_bytes(path, buf.getvalue())


def save_torch(path, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def link_folder(link, target) -> bool:
    """`link` -> `target` (a folder), made or replaced through a temporary name; an existing link
    to another folder is replaced, a real file or folder never. True when the link changed."""
    link, target = Path(link), Path(target).resolve()
    if not target.is_dir():
        raise RetabError(f"{target}: not a folder, cannot link {link} to it")
    if link.is_symlink() or link.exists():
        if link.resolve() == target:
            return False
        if not link.is_symlink():
            raise RetabError(f"{link} exists and is not a link: it is not replaced by a link to {target}")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)
    return True
