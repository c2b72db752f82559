"""The evaluation engine (SPEC 6): mIoU of label PNGs or of score dicts with a background
threshold, for `retab evaluation` (PSA) and `retab evaluation_boundary` (RETAB: a fold, `npy_new`
and target-pixel masking), the demo and the tools.

Every prediction, GT (and target map) file is read once, even in a threshold scan: for score dicts
each pixel's best object channel and score are computed once and binned against all thresholds
(retab.metrics). Images are spread over all cores.

Differences from the published scripts, on purpose:
- `--curve False` means False (the published `type=bool` read any value as True);
- a scan whose best t is the first or last value is reported with a warning (the published
  script meant to write a `wrong` entry there and crashed);
- the log's all/base/novel line ends in `, bgscore:0.25` (t with two decimals, SPEC 6);
- missing files, size mismatches and unknown label values are errors naming the file.
"""
from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retab import metrics, voc
from retab.misc.args import setup_logging, str2bool
from retab.misc.errors import RetabError
from retab.misc.fileio import append_text, load_score_dict
from retab.misc.outputs import check_writable
from retab.misc.progress import progress as progress_bar

log = logging.getLogger("retab")

PRED_TYPES = ("png", "npy", "npy_new")
PSA_SCAN_LAST = 0.59  # PSA's curve: t = 0.00 .. 0.59
RETAB_SCAN_LAST = 0.41  # RETAB's curve: t = 0.00 .. 0.41
LOG_RULE = "=" * 37
SERIAL_BELOW = 16  # fewer images than this: a process pool costs more than it saves


def scan_thresholds(last: float) -> list[float]:
    """0.00, 0.01, ..., last (computed as i / 100 like the published loop)."""
    return [i / 100.0 for i in range(int(round(last * 100)) + 1)]


# ----------------------------------------------------------------------------- reading one image

@dataclass(frozen=True)
class _Job:
    """What a worker needs to turn one image name into counts (picklable)."""

    predict_dir: str
    gt_dir: str
    pred_type: str
    thresholds: tuple[float, ...] | None
    boundary_target_dir: str | None


def load_gt(gt_dir, name: str, boundary_target_dir=None) -> np.ndarray:
    """GT mask (0..20, 255); with a target-pixel folder, pixels whose target map is 0 become 255."""
    gt_path = Path(gt_dir) / f"{name}.png"
    gt = voc.load_gt_mask(gt_path)
    if boundary_target_dir is not None:
        target_path = Path(boundary_target_dir) / f"{name}.png"
        target = voc.load_label_png(target_path)
        if target.shape != gt.shape:
            raise RetabError(f"{target_path}: target map is {_hw(target.shape)} but the ground truth "
                             f"{gt_path} is {_hw(gt.shape)}")
        gt = np.where(target == 0, np.uint8(voc.IGNORE), gt)
    return gt


def _hw(shape) -> str:
    return "x".join(str(s) for s in shape)


def _size_error(pred_path, pred_shape, gt_dir, name, gt_shape) -> RetabError:
    return RetabError(f"{pred_path}: prediction is {_hw(pred_shape)} but the ground truth "
                      f"{Path(gt_dir) / (name + '.png')} is {_hw(gt_shape)}")


def load_png_prediction(path, gt_shape, gt_dir, name) -> np.ndarray:
    pred = voc.load_label_png(path)
    if pred.shape != tuple(gt_shape):
        raise _size_error(path, pred.shape, gt_dir, name, gt_shape)
    return voc.check_label_values(pred, path, allow_ignore=False, what="predicted label values")


def best_object_channel(path, pred_type: str, gt_shape, gt_dir, name) -> tuple[np.ndarray, np.ndarray]:
    """(label, score) of the best object channel per pixel of a score dict.

    `npy`: key k is channel k+1 (PSA CAMs, keys 0..19); `npy_new`: key k is channel k (keys
    1..20), key 0 is dropped. Channels not in the dict never win; ties go to the lowest channel,
    as np.argmax over the published 21-channel tensor does. A dict without object channels scores
    -inf everywhere, i.e. background at every threshold.
    """
    scores = load_score_dict(path)
    offset, highest = (1, voc.NUM_CLASSES - 1) if pred_type == "npy" else (0, voc.NUM_CLASSES)
    if pred_type == "npy_new" and 0 not in scores:  # dicts with background always hold key 0
        raise RetabError(f"{path}: keys {sorted(scores, key=str)} hold no background key 0: they look like a CAM dict "
                         "(class indices 0..19), which --type npy reads; --type npy_new reads dicts with "
                         "background (stage 2's --out_rw_cam)")
    channels = []
    for key in scores:
        if not isinstance(key, (int, np.integer)) or not 0 <= int(key) <= highest:
            raise RetabError(f"{path}: unexpected key {key!r} for --type {pred_type} "
                             f"(expected integers 0..{highest})")
        if pred_type == "npy_new" and int(key) == 0:
            continue  # npy_new: the stored background is replaced by the threshold
        channels.append(int(key) + offset)
    channels.sort()
    maps = []
    for channel in channels:
        score = np.asarray(scores[channel - offset], dtype=np.float32)  # published tensor is float32
        if score.shape != tuple(gt_shape):
            raise _size_error(path, score.shape, gt_dir, name, gt_shape)
        if not np.isfinite(score).all():
            raise RetabError(f"{path}: score map of key {channel - offset} holds NaN or infinite values")
        maps.append(score)
    if not maps:
        return np.zeros(gt_shape, np.uint8), np.full(gt_shape, -np.inf, np.float32)
    if len(maps) == 1:
        return np.full(gt_shape, channels[0], np.uint8), maps[0]
    stacked = np.stack(maps)
    best = np.argmax(stacked, axis=0)  # channels sorted ascending: ties go to the lowest one
    label = np.asarray(channels, np.uint8)[best]
    score = np.take_along_axis(stacked, best[None], axis=0)[0]
    return label, score


def image_counts(job: _Job, name: str) -> np.ndarray:
    """One image: (1, L, L) confusion for png, (n+1, L, L) threshold histogram for score dicts."""
    gt = load_gt(job.gt_dir, name, job.boundary_target_dir)
    if job.pred_type == "png":
        pred = load_png_prediction(Path(job.predict_dir) / f"{name}.png", gt.shape, job.gt_dir, name)
        return metrics.confusion_matrix(gt, pred)[None]
    label, score = best_object_channel(Path(job.predict_dir) / f"{name}.npy", job.pred_type, gt.shape,
                                       job.gt_dir, name)
    return metrics.threshold_histogram(gt, label, score, job.thresholds)


def check_pred_type(pred_type: str) -> None:
    if pred_type not in PRED_TYPES:
        raise RetabError(f"--type must be one of {', '.join(PRED_TYPES)}, got {pred_type!r}")


def per_image_confusions(names, predict_dir, gt_dir, pred_type: str = "png", threshold: float | None = None
                         ) -> np.ndarray:
    """(n, L, L): the confusion of each of `names`, in list order, for label PNGs or, with
    `threshold`, for score dicts at that background score (what `evaluate` sums, kept apart for
    `metrics.paired_bootstrap`)."""
    check_pred_type(pred_type)
    if pred_type != "png" and threshold is None:
        raise RetabError(f"--type {pred_type} needs a background threshold")
    job = _Job(str(predict_dir), str(gt_dir), pred_type, None if pred_type == "png" else (float(threshold),), None)
    counts = [image_counts(job, name) for name in names]
    if pred_type != "png":  # one threshold: the (2, L, L) histogram becomes a (1, L, L) confusion
        counts = [metrics.confusions_from_histogram(c) for c in counts]
    return np.array([c[0] for c in counts], np.int64).reshape(-1, voc.NUM_LABELS, voc.NUM_LABELS)


def _chunk_counts(job: _Job, names: list[str]) -> tuple[int, np.ndarray]:
    total = image_counts(job, names[0])
    for name in names[1:]:
        total += image_counts(job, name)
    return len(names), total


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def accumulate_counts(job: _Job, names: list[str], workers: int = 0, progress: bool = True) -> np.ndarray:
    """Sum of `image_counts` over all names, on `workers` processes (0: every core)."""
    if not names:
        raise RetabError("the image list is empty")
    workers = workers or _default_workers()
    bar = progress_bar(total=len(names), desc="evaluating", disable=not progress, leave=False)
    chunk = max(1, min(32, len(names) // (workers * 4)))
    chunks = [names[i:i + chunk] for i in range(0, len(names), chunk)]
    count_chunk = functools.partial(_chunk_counts, job)
    with bar:
        if workers == 1 or len(names) < SERIAL_BELOW:
            return _sum_with_progress(map(count_chunk, chunks), bar)
        with multiprocessing.Pool(min(workers, len(chunks))) as pool:
            return _sum_with_progress(pool.imap_unordered(count_chunk, chunks), bar)


def _sum_with_progress(results, bar) -> np.ndarray:
    total = None
    for n, counts in results:
        total = counts if total is None else total + counts
        bar.update(n)
    return total


# ----------------------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class Evaluation:
    """All numbers of one evaluation run.

    curve: one Scores per threshold (a single entry for png or a fixed t), in scan order.
    best: the entry with the best mIoU (first on ties); best_novel: the best novel-mIoU entry
    (only for a scan with a fold). *_at_edge: that best t is the first or last scanned value.
    """

    curve: tuple[metrics.Scores, ...]
    scanned: bool

    @property
    def best(self) -> metrics.Scores:
        return self.curve[self._best_index("miou")]

    @property
    def best_novel(self) -> metrics.Scores | None:
        if not self.scanned or self.curve[0].fold is None:
            return None
        return self.curve[self._best_index("novel_miou")]

    @property
    def best_at_edge(self) -> bool:
        return self._at_edge("miou")

    @property
    def best_novel_at_edge(self) -> bool:
        return self.best_novel is not None and self._at_edge("novel_miou")

    def _best_index(self, field: str) -> int:
        return int(np.argmax([getattr(s, field) for s in self.curve]))

    def _at_edge(self, field: str) -> bool:
        return self.scanned and self._best_index(field) in (0, len(self.curve) - 1)


def evaluate(names, predict_dir, gt_dir, pred_type: str = "png", thresholds=None, fold: int | None = None,
             boundary_target_dir=None, workers: int = 0, progress: bool = True, scanned: bool | None = None
             ) -> Evaluation:
    """Evaluate predictions of `names` against `gt_dir`.

    pred_type png: `{predict_dir}/{name}.png` label images, thresholds unused. npy / npy_new:
    `{name}.npy` score dicts with the background score t for each of `thresholds` (ascending).
    fold: adds base/novel mIoU. boundary_target_dir: GT pixels whose `{name}.png` target map is 0 are
    ignored. scanned: whether this is a curve scan (default: more than one threshold).
    """
    check_pred_type(pred_type)
    if fold is not None:
        voc.check_fold(fold)
    for folder, what in ((predict_dir, "prediction"), (gt_dir, "ground truth"), (boundary_target_dir, "target pixel")):
        if folder is not None and not Path(folder).is_dir():
            raise RetabError(f"{folder}: {what} folder not found")
    if pred_type == "png":
        thresholds = None
    else:
        if thresholds is None or len(thresholds) == 0:
            raise RetabError(f"--type {pred_type} needs a background threshold --t (or --curve True)")
        thresholds = tuple(float(t) for t in thresholds)
        if any(b < a for a, b in zip(thresholds, thresholds[1:])):
            raise RetabError("background thresholds must be ascending")
    job = _Job(str(predict_dir), str(gt_dir), pred_type, thresholds,
               None if boundary_target_dir is None else str(boundary_target_dir))
    counts = accumulate_counts(job, list(names), workers, progress)
    if thresholds is None:
        curve = (metrics.scores_from_confusion(counts[0], fold),)
    else:
        confusions = metrics.confusions_from_histogram(counts)
        curve = tuple(metrics.scores_from_confusion(c, fold, t) for c, t in zip(confusions, thresholds))
    if scanned is None:
        scanned = len(curve) > 1
    return Evaluation(curve=curve, scanned=scanned)


def evaluate_fold(names, predict_dir, gt_dir, fold: int, pred_type: str = "png", thresholds=None,
                  boundary_target_dir=None, workers: int = 0, progress: bool = True,
                  scanned: bool | None = None) -> Evaluation:
    """RETAB's evaluation of one fold: `evaluate` with the fold required."""
    voc.check_fold(fold)
    return evaluate(names, predict_dir, gt_dir, pred_type, thresholds, fold=fold,
                    boundary_target_dir=boundary_target_dir, workers=workers, progress=progress, scanned=scanned)


# ----------------------------------------------------------------------------- reporting

def summary_line(scores: metrics.Scores, scanned: bool) -> str:
    """`71.20/74.00/62.50` (mIoU alone without a fold), plus `, bgscore:0.25` in a scan."""
    parts = [scores.miou] if scores.fold is None else [scores.miou, scores.base_miou, scores.novel_miou]
    line = "/".join(f"{v:.2f}" for v in parts)
    if scanned and scores.threshold is not None:
        line += f", bgscore:{scores.threshold:.2f}"
    return line


def log_entry(scores: metrics.Scores, comment: str, scanned: bool, at_edge: bool = False,
              stamp: str | None = None) -> str:
    """Time stamp and comment; `name:value` per label (and the means); the all/base/novel line."""
    stamp = stamp or time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    fields = [f"{name}:{value}" for name, value in scores.by_name().items()]
    fields.append(f"mIoU:{scores.miou}")
    if scores.fold is not None:
        fields += [f"base-mIoU:{scores.base_miou}", f"novel-mIoU:{scores.novel_miou}"]
    if scanned and scores.threshold is not None:
        fields.append(f"background_score:{scores.threshold:.2f}")
    if at_edge:
        fields.append("warning:optimum_at_edge_of_scanned_range")
    return (f"{stamp}\t{comment}\n" + "".join(f + "  " for f in fields) + "\n"
            + summary_line(scores, scanned) + "\n" + LOG_RULE + "\n")


def log_entries(evaluation: Evaluation) -> list[tuple[metrics.Scores, bool]]:
    """(scores, at_edge) to log: the result, or in a scan the best mIoU and the best novel-mIoU."""
    entries = [(evaluation.best, evaluation.best_at_edge)]
    if evaluation.best_novel is not None:
        entries.append((evaluation.best_novel, evaluation.best_novel_at_edge))
    return entries


def write_log(logfile, evaluation: Evaluation, comment: str) -> None:
    text = "".join(log_entry(s, comment, evaluation.scanned, edge) for s, edge in log_entries(evaluation))
    append_text(logfile, text)


def table_text(scores: metrics.Scores) -> str:
    """Per-label IoU, two labels a line, then the means (the published console layout)."""
    cells = [f"{name:>11s}:{value:7.3f}%" for name, value in scores.by_name().items()]
    rows = ["\t".join(cells[i:i + 2]) for i in range(0, len(cells), 2)]
    lines = rows + ["=" * 54, f"{'mIoU':>11s}:{scores.miou:7.3f}%"]
    if scores.fold is not None:
        lines += [f"{'base-mIoU':>11s}:{scores.base_miou:7.3f}%", f"{'novel-mIoU':>11s}:{scores.novel_miou:7.3f}%"]
    if scores.threshold is not None:
        lines.append(f"{'bg score':>11s}: {scores.threshold:.2f}")
    return "\n".join(lines)


def curve_line(index: int, count: int, scores: metrics.Scores) -> str:
    line = f"{index}/{count} background score: {scores.threshold:.3f}\tmIoU: {scores.miou:.3f}%"
    if scores.fold is not None:
        line += f" base-mIoU: {scores.base_miou:.3f}% novel-mIoU: {scores.novel_miou:.3f}%"
    return line


def report(evaluation: Evaluation) -> None:
    """Print the curve (in a scan) and the table of each logged result; warn on edge optima."""
    if evaluation.scanned:
        for i, scores in enumerate(evaluation.curve):
            print(curve_line(i, len(evaluation.curve), scores))
    titles = ("best mIoU", "best novel-mIoU")
    for title, (scores, at_edge) in zip(titles, log_entries(evaluation)):
        if evaluation.scanned:
            print(f"\n{title} at background score {scores.threshold:.2f}:")
        print(table_text(scores))
        if at_edge:
            first, last = evaluation.curve[0].threshold, evaluation.curve[-1].threshold
            log.warning("%s is at t=%.2f, the edge of the scanned range %.2f..%.2f: the optimum may lie "
                        "outside it (reported anyway)", title, scores.threshold, first, last)


# ----------------------------------------------------------------------------- command line

def optional_dir(value: str) -> str | None:
    """The published scripts pass the literal `None` for "no folder"."""
    return None if value in ("", "None", "none") else value


def add_common_args(parser: argparse.ArgumentParser, types, gt_dir_default: str, predict_dir_default: str) -> None:
    parser.add_argument("--list", default="./VOC2012/ImageSets/Segmentation/train.txt",
                        help="image names (plain, SBD-style or .npy)")
    parser.add_argument("--predict_dir", default=predict_dir_default, help="predictions: {name}.png or {name}.npy")
    parser.add_argument("--gt_dir", default=gt_dir_default, help="ground-truth label PNGs")
    parser.add_argument("--logfile", default="./evallog.txt", help="log to append the result entries to")
    parser.add_argument("--comment", required=True, help="text written after the time stamp of each log entry")
    parser.add_argument("--type", default="png", choices=types, help="prediction type (default png)")
    parser.add_argument("--t", type=float, default=None,
                        help="background score for score dicts (required for npy types unless --curve True)")
    parser.add_argument("--curve", type=str2bool, default=False,
                        help="True: scan the background score and log the best mIoU (and best novel-mIoU)")
    parser.add_argument("--workers", type=int, default=0, help="processes (default 0: every core)")
    parser.add_argument("--verbose", type=str2bool, default=False)


def run(args, scan_last: float) -> Evaluation:
    """Shared body of both evaluation commands: evaluate, print, append to the log."""
    setup_logging(args.verbose)
    if Path(args.logfile).is_dir():
        raise RetabError(f"--logfile {args.logfile} is a folder, not a file")
    check_writable(Path(args.logfile).parent, "--logfile's folder")
    names = voc.read_name_list(args.list)
    if not names:
        raise RetabError(f"{args.list}: the image list (--list) is empty")
    if args.curve:
        if args.type == "png":
            raise RetabError("--curve True scans the background score: it needs --type npy or npy_new")
        thresholds = scan_thresholds(scan_last)
    else:
        thresholds = None if args.t is None else [args.t]
    evaluation = evaluate(names, args.predict_dir, args.gt_dir, args.type, thresholds, fold=args.fold,
                          boundary_target_dir=getattr(args, "boundary_target_dir", None), workers=args.workers,
                          scanned=bool(args.curve))
    report(evaluation)
    write_log(args.logfile, evaluation, args.comment)
    log.info("appended %d log entries to %s", len(log_entries(evaluation)), args.logfile)
    return evaluation
