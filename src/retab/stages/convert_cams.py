"""`retab convert_cams`: CAMs of other code bases -> the score-dict format RETAB reads (SPEC 5).

RETAB's stage 1 takes any initial response given as `{name}.npy` holding a pickled dict
{class index 0..19: float32 HxW map at the original image size} (present classes only). This
command converts other formats into it:

--format irn: IRNet's `make_cam` output, a pickled dict with
  'keys'     the present classes, 0-based, no background (IRN saves a torch tensor or an array),
  'cam'      [K, h, w] CAMs at the network's stride (h = ceil(H / s)),
  'high_res' [K, H, W] CAMs at the image size (optional).
  high_res is used when present; otherwise the strided CAMs are upsampled to the image size
  (bilinear, align_corners=False, to (h*s, w*s) for the stride s that explains (h, w) from
  (H, W), then cropped), which needs --voc12_root for the image size.

--format cam_dict: score dicts already in the format but not max-normalised (CAMs of another
  method): each map is divided by (its maximum + 1e-5), as infer_cls normalises its CAMs.

Files: every {name}.npy of --in_dir, or the names of --list. Existing outputs are skipped unless
--overwrite.
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from retab import voc
from retab.misc.args import setup_logging
from retab.misc.errors import RetabError
from retab.cam import NORM_EPS
from retab.misc.fileio import load_score_dict, save_score_dict
from retab.misc.safe_pickle import load_npy
from retab.score_format import dict_keys
from retab.misc.outputs import check_outputs, dataset_inputs
from retab.misc.progress import progress

log = logging.getLogger("retab")

FORMATS = ("irn", "cam_dict")
MAX_STRIDE = 32  # strides tried when explaining a strided CAM's size from the image size


def _as_array(value, path, field: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001
        raise RetabError(f"{path}: IRN field {field!r} is not an array") from None


def load_irn_dict(path) -> dict:
    """The IRN dict of one file, checked: {'keys': int array [K], and 'high_res' and/or 'cam' float [K, ., .]}."""
    obj = load_npy(path, "IRN CAM file", allow_torch=True)  # IRN pickles torch tensors: read without running code
    obj = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () else obj
    if not isinstance(obj, dict):
        raise RetabError(f"{path}: expected an IRN dict with 'keys', 'cam', 'high_res'; got a "
                         f"{type(obj).__name__}")
    if "keys" not in obj or not ({"cam", "high_res"} & set(obj)):
        found = ", ".join(repr(k) for k in list(obj)[:8])
        hint = " (already a score dict? it needs no conversion)" if obj and all(
            isinstance(k, (int, np.integer)) for k in obj) else ""
        raise RetabError(f"{path}: not an IRN CAM dict: it needs 'keys' and 'cam' or 'high_res', has {found}{hint}")
    keys = _as_array(obj["keys"], path, "keys").reshape(-1)
    if keys.size and not np.issubdtype(keys.dtype, np.integer):
        raise RetabError(f"{path}: IRN 'keys' must be integer class indices, got dtype {keys.dtype}")
    keys = keys.astype(np.int64)
    if keys.size and (keys.min() < 0 or keys.max() >= voc.NUM_CLASSES):
        raise RetabError(f"{path}: IRN 'keys' {keys.tolist()} lie outside 0..{voc.NUM_CLASSES - 1} "
                         "(0-based classes without background)")
    if len(set(keys.tolist())) != keys.size:
        raise RetabError(f"{path}: IRN 'keys' {keys.tolist()} repeat a class")
    out = {"keys": keys}
    for field in ("high_res", "cam"):
        if field in obj and obj[field] is not None:
            maps = _as_array(obj[field], path, field)
            if maps.ndim == 2 and keys.size == 1:
                maps = maps[None]
            if maps.ndim != 3 or maps.shape[0] != keys.size:
                raise RetabError(f"{path}: IRN {field!r} has shape {maps.shape}, expected "
                                 f"[{keys.size}, height, width] for the {keys.size} keys")
            if not np.issubdtype(maps.dtype, np.floating):
                raise RetabError(f"{path}: IRN {field!r} must hold floats, got dtype {maps.dtype}")
            out[field] = maps.astype(np.float32)
    if "high_res" not in out and "cam" not in out:
        raise RetabError(f"{path}: IRN dict holds neither 'high_res' nor 'cam' maps")
    return out


def stride_for(strided_hw: tuple[int, int], image_hw: tuple[int, int]) -> int | None:
    """The smallest stride s with (ceil(H/s), ceil(W/s)) == (h, w), or None."""
    for s in range(1, MAX_STRIDE + 1):
        if (math.ceil(image_hw[0] / s), math.ceil(image_hw[1] / s)) == tuple(strided_hw):
            return s
    return None


def upsample_strided(cams: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """[K, h, w] strided CAMs -> [K, H, W]: bilinear (align_corners=False) to (h*s, w*s), crop.

    With no stride explaining the sizes, the maps are resized straight to (H, W).
    """
    k, h, w = cams.shape
    stride = stride_for((h, w), image_hw)
    size = (h * stride, w * stride) if stride else image_hw
    x = torch.from_numpy(np.ascontiguousarray(cams, np.float32))[None]
    up = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]
    return up[:, :image_hw[0], :image_hw[1]].numpy()


def irn_to_score_dict(irn: dict, image_hw: tuple[int, int] | None = None, source="IRN dict") -> dict:
    """{class k: float32 HxW} from a checked IRN dict (`load_irn_dict`)."""
    if "high_res" in irn:
        maps = irn["high_res"]
        if image_hw is not None and maps.shape[1:] != tuple(image_hw):
            raise RetabError(f"{source}: IRN 'high_res' is {maps.shape[2]}x{maps.shape[1]} but the image is "
                             f"{image_hw[1]}x{image_hw[0]}")
    else:
        if image_hw is None:
            raise RetabError(f"{source}: IRN dict has only strided 'cam' maps; --voc12_root is needed for "
                             "the image size")
        maps = upsample_strided(irn["cam"], image_hw)
    return {int(k): np.ascontiguousarray(m, np.float32) for k, m in zip(irn["keys"], maps)}


def image_hw_of(voc_root, name: str) -> tuple[int, int]:
    path = voc.image_path(voc_root, name)
    if not path.is_file():
        raise RetabError(f"{path}: image not found (needed for the size of {name}'s CAMs)")
    try:
        with Image.open(path) as img:  # reads the header only
            return img.height, img.width
    except Exception as exc:  # noqa: BLE001
        raise RetabError(f"{path}: cannot read the image ({exc})") from None


def normalised_cam_dict(path, image_hw: tuple[int, int] | None = None) -> dict:
    """A CAM dict {class 0..19: HxW} with each map divided by (its max + 1e-5), checked on the way."""
    scores = load_score_dict(path)
    out = {}
    for key in dict_keys(scores, path):
        if not 0 <= key < voc.NUM_CLASSES:
            raise RetabError(f"{path}: key {key} is not a class index 0..{voc.NUM_CLASSES - 1} (a CAM dict has no "
                             "background key)")
        cam = np.asarray(scores[key], np.float32)
        if cam.ndim != 2 or (image_hw is not None and cam.shape != tuple(image_hw)):
            raise RetabError(f"{path}: the map of class {key} has shape {cam.shape}, expected "
                             f"{tuple(image_hw) if image_hw else '(height, width)'}")
        if not np.isfinite(cam).all():
            raise RetabError(f"{path}: the map of class {key} holds NaN or infinite values")
        out[key] = (cam / (cam.max() + NORM_EPS)).astype(np.float32)
    return out


def convert_file(src: Path, dst: Path, fmt: str = "irn", voc_root=None) -> dict:
    """Convert one file; returns the score dict written."""
    if fmt not in FORMATS:
        raise RetabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    image_hw = image_hw_of(voc_root, src.stem) if voc_root is not None else None
    if fmt == "cam_dict":
        scores = normalised_cam_dict(src, image_hw)
    else:
        scores = irn_to_score_dict(load_irn_dict(src), image_hw, source=str(src))
    save_score_dict(dst, scores)
    return scores


def input_names(in_dir: Path, list_path) -> list[str]:
    if list_path:
        names = voc.read_name_list(list_path)
        if not names:
            raise RetabError(f"{list_path}: the image list (--list) is empty")
        return names
    return sorted(p.stem for p in in_dir.glob("*.npy"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab convert_cams", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=FORMATS, help="format of the input CAMs")
    p.add_argument("--in_dir", required=True, help="input CAM files {name}.npy")
    p.add_argument("--out_dir", required=True, help="output score dicts {name}.npy")
    p.add_argument("--list", default=None, help="image names to convert (default: every .npy of --in_dir)")
    p.add_argument("--voc12_root", default=None,
                   help="VOC2012 folder: image sizes for strided-only CAMs, and a size check of high_res")
    p.add_argument("--overwrite", action="store_true", help="convert again files whose output exists")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    in_dir, out_dir = Path(args.in_dir), Path(args.out_dir)
    if not in_dir.is_dir():
        raise RetabError(f"{in_dir}: input CAM folder not found")
    check_outputs({"--out_dir": out_dir}, {"--in_dir": in_dir, **dataset_inputs(args.voc12_root)})
    if args.voc12_root is not None and not Path(args.voc12_root).is_dir():
        raise RetabError(f"{args.voc12_root}: VOC2012 folder not found")
    names = input_names(in_dir, args.list)
    if not names:
        raise RetabError(f"{in_dir}: no .npy CAM files to convert")
    todo = [n for n in names if args.overwrite or not (out_dir / f"{n}.npy").is_file()]
    log.info("convert_cams (%s): %d files, %d to do", args.format, len(names), len(todo))
    for name in progress(todo, desc="converting CAMs", disable=len(todo) < 2):
        convert_file(in_dir / f"{name}.npy", out_dir / f"{name}.npy", args.format, args.voc12_root)
    return 0
