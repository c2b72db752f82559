"""`retab infer_cls` (psa/infer_cls.py): multi-scale CAMs and the la / ha CRF label dicts (SPEC 3).

Per image of --infer_list, for the outputs asked for:
  --out_cam      {name}.npy  CAM dict {class 0..19: float32 HxW} of the image's classes (SPEC 5)
  --out_la_crf   {name}.npy  CRF label dict {0: background, k+1: map} with alpha --low_alpha (4)
  --out_ha_crf   {name}.npy  the same with --high_alpha (32)
  --out_cam_pred {name}.png  label PNG: argmax of [background score --cam_pred_bg, the 20 CAMs]
                             (the published script used the fixed background score 0.2)

The network runs in this process (on --device; the image and its mirror of one scale form one
batch, and with --cam_batch N up to N images of the same size share it); the dense CRFs run in
--crf_workers processes on the CPU at the same time. An image whose requested outputs all exist is
skipped unless --overwrite; when only its CRF dicts are missing, its CAM dict is read back instead
of recomputed. Under torchrun each process takes names[rank::world] of the list (and by default
its share of the CPUs for the CRFs).
"""
from __future__ import annotations

import argparse
import collections
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np

from retab import voc
from retab.cam import CAM_SCALES, multiscale_cam, multiscale_cams
from retab.crf import crf_label_dicts
from retab.data import ImageDataset
from retab.misc import distributed
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_score_dict
from retab.voc import save_label_png
from retab.published import CRF_HIGH_ALPHA, CRF_LOW_ALPHA
from retab.random_walk import labels_from_scores
from retab.score_format import check_keys
from retab.engines.stage_support import (add_runtime_args, add_cls_labels_arg, add_inference_args, check_outputs, dataset_inputs, image_loader,
                                 labels_table, load_inference_model, plan_inference, resolve_image_labels,
                                 setup_stage)

log = logging.getLogger("retab")

CAM_PRED_BG = 0.2  # published background score of the CAM label PNGs


# ----------------------------------------------------------------------------- outputs of one image

def output_paths(name: str, args) -> dict[str, Path]:
    """kind -> path of every output asked for ('cam', 'la', 'ha', 'pred')."""
    folders = {"cam": args.out_cam, "la": args.out_la_crf, "ha": args.out_ha_crf, "pred": args.out_cam_pred}
    suffix = {"cam": ".npy", "la": ".npy", "ha": ".npy", "pred": ".png"}
    return {kind: Path(folder) / f"{name}{suffix[kind]}" for kind, folder in folders.items() if folder}


def cam_prediction(cam_dict: dict, height: int, width: int, bg_score: float) -> np.ndarray:
    """uint8 labels: argmax over [constant background, CAM of class k at channel k+1]; absent
    classes score 0, ties go to the lower label."""
    scores = np.zeros((voc.NUM_LABELS, height, width), np.float32)
    scores[0] = bg_score
    for k, cam in cam_dict.items():
        scores[int(k) + 1] = cam
    return labels_from_scores(scores)


def crf_job(image: np.ndarray, cam_dict: dict, targets: list[tuple[float, str]]) -> None:
    """Dense CRF label dicts of one image for each (alpha, output path); runs in a worker process."""
    dicts = crf_label_dicts(image, cam_dict, alphas=[alpha for alpha, _ in targets])
    for alpha, path in targets:
        save_score_dict(path, dicts[alpha])


class CrfWorkers:
    """Runs crf_job in `workers` processes (0: in this process), with at most 2 jobs per worker
    waiting, so the network never runs far ahead of the CRFs (memory stays bounded)."""

    def __init__(self, workers: int):
        self.pool = None
        if workers > 0:
            # fork: the stage scripts are run as `python infer_cls.py`, which a spawned child would
            # re-run from the top; the workers use numpy and pydensecrf only, never torch.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = ctx.Pool(workers)
        self.pending = collections.deque()
        self.limit = 2 * max(workers, 1)

    def submit(self, *task) -> None:
        if self.pool is None:
            crf_job(*task)
            return
        self.pending.append(self.pool.apply_async(crf_job, task))
        while len(self.pending) > self.limit:
            self.pending.popleft().get()  # re-raises a worker's exception here

    def finish(self) -> None:
        while self.pending:
            self.pending.popleft().get()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
        return False


# ----------------------------------------------------------------------------- the stage

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab infer_cls", description=__doc__.splitlines()[0])
    add_inference_args(p, weights_help="trained classifier .pth", network="network.resnet38_cls")
    p.add_argument("--low_alpha", type=float, default=CRF_LOW_ALPHA)
    p.add_argument("--high_alpha", type=float, default=CRF_HIGH_ALPHA)
    p.add_argument("--out_cam", default=None)
    p.add_argument("--out_la_crf", default=None)
    p.add_argument("--out_ha_crf", default=None)
    p.add_argument("--out_cam_pred", default=None)
    p.add_argument("--cam_pred_bg", type=float, default=CAM_PRED_BG,
                   help=f"background score of the --out_cam_pred PNGs (published: {CAM_PRED_BG})")
    p.add_argument("--scales", type=float, nargs="+", default=list(CAM_SCALES))
    p.add_argument("--crf_workers", type=int, default=None,
                   help="processes for the dense CRFs (0: in the main process; default: the CPU count, "
                        "divided among the processes of this machine under torchrun)")
    p.add_argument("--cam_batch", type=int, default=1,
                   help="images of the same size per network batch (each at every scale with its mirror); "
                        "default 1: one image at a time. More fills a GPU better; the maps agree with "
                        "--cam_batch 1 up to rounding")
    add_cls_labels_arg(p)
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_stage(args)
    if not any((args.out_cam, args.out_la_crf, args.out_ha_crf, args.out_cam_pred)):
        raise RetabError("nothing to do: give at least one of --out_cam, --out_la_crf, --out_ha_crf, --out_cam_pred")
    if args.low_alpha == args.high_alpha and args.out_la_crf and args.out_ha_crf:
        raise RetabError("--low_alpha and --high_alpha must differ")
    if args.cam_batch < 1:
        raise RetabError(f"--cam_batch must be at least 1, got {args.cam_batch}")
    check_outputs({"--out_cam": args.out_cam, "--out_la_crf": args.out_la_crf, "--out_ha_crf": args.out_ha_crf,
                   "--out_cam_pred": args.out_cam_pred}, dataset_inputs(args.voc12_root))
    crf_workers = args.crf_workers
    if crf_workers is None:
        crf_workers = distributed.default_workers(os.cpu_count() or 1)
    voc_root, precision, names, todo = plan_inference(args, "infer_cls", lambda name: output_paths(name, args))
    log.info("infer_cls: %d images in %s, %d to do", len(names), args.infer_list, len(todo))
    if not todo:
        return 0
    labels = labels_table(list(todo), resolve_image_labels(args.cls_labels, voc_root))

    # The CRF processes are forked before the network exists (and before any CUDA context).
    with CrfWorkers(crf_workers) as crf:
        model, device = load_inference_model("cls", args.weights, args.width, args.device, precision, args.backbone)
        if args.cam_batch == 1:
            images = ImageDataset(list(todo), voc_root, labels)
            for name, img, image_labels in image_loader(images, args.num_workers, "CAMs"):
                infer_one(model, device, name, img, image_labels, todo[name], args, crf)
        else:
            images = ImageDataset(sorted_by_size(list(todo), voc_root), voc_root, labels)
            for group in same_size_groups(image_loader(images, args.num_workers, "CAMs"), args.cam_batch):
                infer_group(model, device, group, todo, args, crf)
        crf.finish()
    return 0


def infer_one(model, device, name: str, img, image_labels, missing: dict[str, Path], args, crf) -> None:
    """Write the missing outputs of one image; the CRFs are handed to the worker processes."""
    cam_dict = stored_cam(name, missing, args, image_labels)
    if cam_dict is None:
        cam_dict = multiscale_cam(model.cam, img, image_labels, args.scales, device)
    write_outputs(name, img, cam_dict, missing, args, crf)


def stored_cam(name: str, missing: dict[str, Path], args, image_labels) -> dict | None:
    """The image's CAM dict read back when only its CRF dicts or PNG are missing, else None; its
    keys must be the image's classes (a dict of another format would shift every CRF label)."""
    if args.out_cam and "cam" not in missing:
        path = Path(args.out_cam) / f"{name}.npy"
        cam_dict = load_score_dict(path)
        check_keys(cam_dict, image_labels, False, path, "infer_cls (for the CRF dicts and PNGs it makes from them)")
        return cam_dict
    return None


def sorted_by_size(names: list[str], voc_root) -> list[str]:
    """`names` ordered by image size (stable), so that same-size images come together for --cam_batch."""
    from PIL import Image

    def size(name):
        with Image.open(voc.image_path(voc_root, name)) as img:  # reads the header only
            return img.size

    return sorted(names, key=size)


def same_size_groups(samples, limit: int):
    """Consecutive samples (name, image, labels) in groups of at most `limit` images of one size."""
    group = []
    for sample in samples:
        if group and (len(group) == limit or group[0][1].size != sample[1].size):
            yield group
            group = []
        group.append(sample)
    if group:
        yield group


def infer_group(model, device, group, todo: dict[str, dict[str, Path]], args, crf) -> None:
    """infer_one for a group of same-size images, whose CAMs are computed in shared batches."""
    cams = {name: stored_cam(name, todo[name], args, labels) for name, _, labels in group}
    compute = [(name, img, labels) for name, img, labels in group if cams[name] is None]
    if compute:
        computed = multiscale_cams(model.cam, [img for _, img, _ in compute], [labels for _, _, labels in compute],
                                   args.scales, device)
        cams.update((name, cam_dict) for (name, _, _), cam_dict in zip(compute, computed))
    for name, img, _ in group:
        write_outputs(name, img, cams[name], todo[name], args, crf)


def write_outputs(name: str, img, cam_dict: dict, missing: dict[str, Path], args, crf) -> None:
    """The missing outputs of one image from its CAM dict; the CRFs go to the worker processes."""
    for k, cam in cam_dict.items():
        if not np.isfinite(cam).all():
            source = "the classifier's CAM" if "cam" in missing or not args.out_cam else \
                f"the CAM read back from {Path(args.out_cam) / (name + '.npy')}"
            raise RetabError(f"{name}: {source} of class {k} holds NaN or infinite values "
                             "(non-finite weights, or an --amp overflow)")
    if "cam" in missing:
        save_score_dict(missing["cam"], cam_dict)
    if "pred" in missing:
        save_label_png(missing["pred"], cam_prediction(cam_dict, img.height, img.width, args.cam_pred_bg))
    targets = [(alpha, str(missing[kind])) for kind, alpha in (("la", args.low_alpha), ("ha", args.high_alpha))
               if kind in missing]
    if targets:
        crf.submit(np.asarray(img, dtype=np.uint8), cam_dict, targets)
