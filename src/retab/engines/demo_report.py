"""What `retab demo` reports from the files the drivers wrote: the table (CAM, PSA walk, CAM + RETAB,
segmentation; all / base / novel mIoU), CAM + RETAB's differences with their paired-bootstrap sd,
the timings, and a picture of a few novel samples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from retab import voc
from retab.engines.evaluation import PSA_SCAN_LAST, evaluate_fold, per_image_confusions, scan_thresholds
from retab.metrics import paired_bootstrap, scores_from_confusion
from retab.misc.fileio import load_score_dict, save_image


def result_paths(out: Path, fold: int) -> dict:
    """Where the table's inputs lie in a demo folder: the train and val lists (read), the fold's
    novel-sample list, the dataset and its GT masks, each row's predictions."""
    psa_out = out / "psa" / "out"
    retab_out = out / "RETAB" / "out" / f"fold{fold}"
    voc_root = out / "data" / "VOC2012"
    return {"train": voc.read_name_list(out / "psa" / "voc12" / "train.txt"),
            "val": voc.read_name_list(out / "psa" / "voc12" / "val.txt"),
            "novel_list": out / "psa" / "voc12" / f"trainaug_fold{fold}_novel.txt",
            "voc_root": voc_root, "gt": voc_root / "SegmentationClass",
            "cam": psa_out / "psa_trainaug_cam", "psa_rw": psa_out / "psa_rw",
            "retab_rw": retab_out / "rw_stage2", "retab_scores": retab_out / "rw_cam_stage2",
            "seg": out / "seg" / "out" / f"fold{fold}_mixed" / "pred_val"}


def evaluate_rows(out: Path, fold: int) -> list[tuple[str, object]]:
    """(row name, Scores) for the table, computed from the files the drivers wrote. Both background
    scans cover PSA's wider range (0.00 .. 0.59): the demo's from-scratch CAMs are best near 0.45,
    beyond RETAB's published 0.41, where the CAM row would be understated."""
    p = result_paths(out, fold)
    train, gt = p["train"], p["gt"]
    rows = []
    cam = evaluate_fold(train, p["cam"], gt, fold, "npy", thresholds=scan_thresholds(PSA_SCAN_LAST), progress=False)
    rows.append(("CAM (train)", cam.best))
    rows.append(("PSA random walk (train)", evaluate_fold(train, p["psa_rw"], gt, fold, progress=False).best))
    rows.append(("CAM + RETAB (train)", evaluate_fold(train, p["retab_rw"], gt, fold, progress=False).best))
    scan = evaluate_fold(train, p["retab_scores"], gt, fold, "npy_new", thresholds=scan_thresholds(PSA_SCAN_LAST),
                    progress=False)
    rows.append(("CAM + RETAB, background scan (train)", scan.best))
    if p["seg"].is_dir():
        rows.append(("segmentation, mixed (val)", evaluate_fold(p["val"], p["seg"], gt, fold, progress=False).best))
    return rows


def retab_differences(out: Path, fold: int, cam_threshold: float, rounds: int = 1000) -> list[tuple]:
    """[(name, (all-mIoU difference, sd), (novel-mIoU difference, sd))] of CAM + RETAB's labels
    against the CAM (at the table's threshold) and against PSA's walk on the train pictures. The sd
    is a paired bootstrap over those pictures (metrics.paired_bootstrap): a few hundred synthetic
    pictures leave differences of a few points within the noise of the draw."""
    p = result_paths(out, fold)
    train, gt = p["train"], p["gt"]
    retab = per_image_confusions(train, p["retab_rw"], gt)
    others = (("CAM + RETAB - CAM", per_image_confusions(train, p["cam"], gt, "npy", cam_threshold)),
              ("CAM + RETAB - PSA random walk", per_image_confusions(train, p["psa_rw"], gt)))
    scores = (lambda c: scores_from_confusion(c).miou, lambda c: scores_from_confusion(c, fold).novel_miou)
    return [(name, *(paired_bootstrap(before, retab, score, rounds) for score in scores)) for name, before in others]


def table_text(rows, timings: list[tuple[str, str, float]], fold: int, differences=(), pictures: int = 0) -> str:
    lines = [f"| result (fold {fold}) | mIoU all | base | novel |", "|---|---|---|---|"]
    for name, s in rows:
        t = f" (bg t={s.threshold:.2f})" if s.threshold is not None else ""
        lines.append(f"| {name}{t} | {s.miou:.2f} | {s.base_miou:.2f} | {s.novel_miou:.2f} |")
    if differences:
        lines += ["", f"| difference (train; sd over resamples of its {pictures} pictures) | mIoU all | novel |",
                  "|---|---|---|"]
        lines += [f"| {name} | {a:+.2f} (sd {a_sd:.2f}) | {n:+.2f} (sd {n_sd:.2f}) |"
                  for name, (a, a_sd), (n, n_sd) in differences]
    lines += ["", "| stage | step | seconds |", "|---|---|---|"]
    lines += [f"| {folder} | {step} | {sec:.1f} |" for folder, step, sec in timings]
    return "\n".join(lines) + "\n"


def novel_picture(out: Path, fold: int, cam_threshold: float, count: int = 4) -> Path | None:
    """Rows of image | GT | CAM | RETAB labels for a few novel train samples."""
    p = result_paths(out, fold)
    novel = set(voc.read_name_list(p["novel_list"]))
    names = [n for n in p["train"] if n in novel][:count]
    if not names:
        return None
    palette = np.array(voc.voc_palette(), np.uint8).reshape(256, 3)
    rows = []
    for name in names:
        img = np.asarray(voc.load_image(voc.image_path(p["voc_root"], name)))
        gt = voc.load_label_png(p["gt"] / f"{name}.png")
        cams = load_score_dict(p["cam"] / f"{name}.npy")
        keys = sorted(cams)
        stack = np.stack([np.full(gt.shape, cam_threshold, np.float32)] + [cams[k] for k in keys])
        cam_labels = np.array([0] + [k + 1 for k in keys], np.uint8)[stack.argmax(0)]
        retab = voc.load_label_png(p["retab_rw"] / f"{name}.png")
        tiles = [img] + [palette[x] for x in (gt, cam_labels, retab)]
        rows.append(np.concatenate([t for tile in tiles for t in (tile, np.full((tile.shape[0], 4, 3), 255, np.uint8))],
                                   axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path = out / f"novel_samples_fold{fold}.png"
    save_image(path, Image.fromarray(np.concatenate(rows, axis=0)))
    return path
