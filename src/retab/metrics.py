"""Confusion matrices and IoU (SPEC 6), shared by the evaluation stages and the segmentation stage.

Conventions: `conf[g, p]` counts pixels with ground truth g and prediction p, over the pixels
whose ground truth is < 255. Per label: T = row sum, P = column sum, TP = diagonal and
IoU = TP / (T + P - TP + 1e-10). The 1e-10 (published) makes a label absent from both GT and
prediction score 0, and that 0 still counts in the mean over the 21 labels.

For a background threshold scan (`npy` score dicts) the prediction at threshold t is the label of
the best object channel, or background where t >= its score (np.argmax over [t, channels...]
gives ties to channel 0). Instead of one argmax per threshold, each pixel is binned once by how
many thresholds lie below its best object score; every threshold's confusion follows from
prefix/suffix sums of that histogram (`threshold_histogram`, `confusions_from_histogram`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retab.voc import IGNORE, LABEL_NAMES, NUM_LABELS, base_labels, check_fold, novel_labels

IOU_EPS = 1e-10  # published denominator guard


def _pair_counts(first: np.ndarray, second: np.ndarray, num_labels: int) -> np.ndarray:
    """Counts of (first, second) pairs, both in 0..num_labels-1, as a (L, L) int64 matrix."""
    flat = np.bincount(first.astype(np.int64) * num_labels + second, minlength=num_labels * num_labels)
    if flat.size > num_labels * num_labels:
        raise ValueError(f"label values must lie in 0..{num_labels - 1} (or {IGNORE} in the ground truth)")
    return flat.reshape(num_labels, num_labels)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_labels: int = NUM_LABELS) -> np.ndarray:
    """int64 (L, L) confusion `conf[gt, pred]` over the pixels whose gt is < 255."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != prediction shape {pred.shape}")
    valid = gt < IGNORE
    return _pair_counts(gt[valid], pred[valid].astype(np.int64), num_labels)


def _check_thresholds(thresholds) -> np.ndarray:
    # The published evaluator writes t into a float32 tensor next to float32 maps: compare in float32.
    t = np.asarray(thresholds, dtype=np.float32).reshape(-1)
    if t.size == 0 or np.any(np.diff(t) < 0):
        raise ValueError("thresholds must be a non-empty ascending sequence")
    return t


def threshold_histogram(gt: np.ndarray, obj_label: np.ndarray, obj_score: np.ndarray,
                        thresholds, num_labels: int = NUM_LABELS) -> np.ndarray:
    """int64 (n+1, L, L): valid pixels counted by (j, gt, obj_label), j = #thresholds < obj_score.

    obj_label / obj_score: the best object channel of each pixel and its score. A pixel is
    background for the thresholds t_i >= score (i >= j) and `obj_label` for the first j ones.
    Histograms of several images add up; turn the sum into confusions with
    `confusions_from_histogram`.
    """
    gt, obj_label = np.asarray(gt), np.asarray(obj_label)
    obj_score = np.asarray(obj_score, dtype=np.float32)
    if not (gt.shape == obj_label.shape == obj_score.shape):
        raise ValueError(f"shapes differ: gt {gt.shape}, labels {obj_label.shape}, scores {obj_score.shape}")
    t = _check_thresholds(thresholds)
    valid = gt < IGNORE
    below = np.searchsorted(t, obj_score[valid], side="left")  # number of thresholds < score
    pairs = gt[valid].astype(np.int64) * num_labels + obj_label[valid]
    size = (t.size + 1) * num_labels * num_labels
    flat = np.bincount(below * (num_labels * num_labels) + pairs, minlength=size)
    if flat.size > size:
        raise ValueError(f"label values must lie in 0..{num_labels - 1} (or {IGNORE} in the ground truth)")
    return flat.reshape(t.size + 1, num_labels, num_labels)


def confusions_from_histogram(hist: np.ndarray) -> np.ndarray:
    """(n+1, L, L) histogram of `threshold_histogram` -> (n, L, L) confusion per threshold."""
    hist = np.asarray(hist, dtype=np.int64)
    n = hist.shape[0] - 1
    # threshold i: pixels with j > i keep their object label ...
    suffix = np.cumsum(hist[::-1], axis=0)[::-1]
    conf = suffix[1:].copy()
    # ... and pixels with j <= i are predicted background (column 0), whatever their object label.
    gt_counts_prefix = np.cumsum(hist.sum(axis=2), axis=0)[:n]
    conf[:, :, 0] += gt_counts_prefix
    return conf


def confusion_by_threshold(gt, obj_label, obj_score, thresholds, num_labels: int = NUM_LABELS) -> np.ndarray:
    """(n, L, L) confusion for each threshold of one image (see `threshold_histogram`)."""
    return confusions_from_histogram(threshold_histogram(gt, obj_label, obj_score, thresholds, num_labels))


def iou_per_label(conf: np.ndarray) -> np.ndarray:
    """float64 (L,) IoU fractions TP / (T + P - TP + 1e-10) of a (L, L) confusion."""
    conf = np.asarray(conf, dtype=np.int64)
    tp = np.diag(conf).astype(np.float64)
    t = conf.sum(axis=1)
    p = conf.sum(axis=0)
    return tp / (t + p - tp + IOU_EPS)


@dataclass(frozen=True)
class Scores:
    """IoUs in percent. base/novel are None without a fold; threshold is the background score."""

    iou: tuple[float, ...]  # per label 0..20, percent
    miou: float
    base_miou: float | None = None
    novel_miou: float | None = None
    fold: int | None = None
    threshold: float | None = None

    def by_name(self) -> dict[str, float]:
        return dict(zip(LABEL_NAMES, self.iou))


def scores_from_confusion(conf: np.ndarray, fold: int | None = None, threshold: float | None = None) -> Scores:
    """mIoU over all 21 labels, and over the 16 base / 5 novel labels of `fold` when given."""
    iou = iou_per_label(conf) * 100.0
    base = novel = None
    if fold is not None:
        check_fold(fold)
        base = float(np.mean(iou[base_labels(fold)]))
        novel = float(np.mean(iou[novel_labels(fold)]))
    return Scores(iou=tuple(float(v) for v in iou), miou=float(np.mean(iou)), base_miou=base,
                  novel_miou=novel, fold=fold, threshold=threshold)


def paired_bootstrap(before: np.ndarray, after: np.ndarray, score, rounds: int = 1000,
                     seed: int = 0) -> tuple[float, float]:
    """A difference of two predictions' scores and how much it owes to the pictures it was measured on.

    before, after: (n, L, L) confusions of the same n pictures, one per picture, in the same order;
    score: a function of one (L, L) confusion (e.g. the novel mIoU of a fold). Returns
    (score(sum of after) - score(sum of before), standard deviation of that difference over
    `rounds` resamples of the n pictures with replacement). Both predictions are summed over the
    same resample each round (paired), so what the pictures do to both cancels. On a few hundred
    pictures this sd says how far another draw of pictures might move the difference.
    """
    before = np.asarray(before, dtype=np.int64)
    after = np.asarray(after, dtype=np.int64)
    if before.ndim != 3 or before.shape != after.shape or before.shape[1] != before.shape[2]:
        raise ValueError(f"paired_bootstrap expects two (n, L, L) stacks of the same shape, got "
                         f"{before.shape} and {after.shape}")
    n = before.shape[0]
    if n == 0 or rounds < 2:
        raise ValueError(f"paired_bootstrap needs pictures and at least 2 rounds, got {n} and {rounds}")
    difference = float(score(after.sum(axis=0)) - score(before.sum(axis=0)))
    # how many times each picture is drawn in each round -> (rounds, L, L) summed confusions at once
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=rounds)
    resampled_after, resampled_before = np.tensordot(draws, after, axes=1), np.tensordot(draws, before, axes=1)
    resampled = [score(a) - score(b) for a, b in zip(resampled_after, resampled_before)]
    return difference, float(np.std(resampled, ddof=1))
