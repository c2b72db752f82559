"""Upper bounds and probes for the random walks, measured against the ground truth.

They answer "what limits the walk's labels here?" (docs/measurements.md) for one image at a
time; the callers sum the confusions over a list (`tools/walk_diagnostics.py`):

- `grid_ceiling_labels`: the GT itself pooled to the 8-px feature grid and upsampled the walk's way:
  what any stride-8 labelling can reach (thin parts below a cell are lost).
- `perfect_affinity_labels`: the PSA walk over the image's CAMs with a perfect affinity (1 between
  cells of the same GT label, 0 across): what the walk could make of these CAMs with an ideal
  affinity net, so that CAM errors and affinity errors can be told apart.
- `pair_label_agreement` and `auc`: an affinity net's pair affinities with whether the GT labels of
  the pair agree, and how well they rank same-label pairs above different-label ones.
- `label_grid_counts`: how right an affinity training's label grid is (the CRF labels' "sure
  foreground" and "sure background" cells against the GT): what LA_ALPHA / HA_ALPHA should be
  for a set of CAMs.
- `taught_pairs`: how many pairs of each kind a label grid teaches (summed over a training's crops:
  how much of each loss term the base and the novel samples hold).
- `cell_majority_labels` and `pair_label_accuracy`: how many of the pairs that a training label
  grid teaches (positive background, positive foreground, negative) the GT agrees with, the GT
  taken as each 8 x 8 cell's majority label: the CRF labels against RETAB's nearest-sampled base
  GT, which straddles every edge that cuts a cell.
- `boundary_flag_counts`: how a boundary target map covers each GT object: the pixels near its
  outline and those deep inside it that the map flags as boundary (base against novel objects: how
  far the boundary net's edges carry over to the unseen classes).
- `label_change_counts`: what a walk changed in a labelling, object by object: the object's pixels
  it gained (the CAMs' holes filled) and lost, and the other pixels it stopped or started calling
  the object (leaks removed and added).
"""
from __future__ import annotations

import numpy as np
import torch

from retab.affinity import affinity_labels, pair_affinities, pair_indices
from retab.published import AFFINITY_RADIUS, FEATURE_STRIDE, WALK_ALPHA, WALK_BETA, WALK_LOGT
from retab.random_walk import (downsample_scores, grid_size, labels_from_scores, pad_to_multiple,
                               random_walk, stage1_labels, stage1_scores, upsample_scores)
from retab.voc import IGNORE, NUM_LABELS

# Features whose L1 distance is 2 * PERFECT_FEATURE_SCALE / 21 between different labels: an
# affinity exp(-9.5) ~ 7e-5 across labels (and ~0 after ** beta), exactly 1 within a label.
PERFECT_FEATURE_SCALE = 100.0


def _cell_centre_labels(gt: np.ndarray, outside: str = "ignore") -> np.ndarray:
    """The GT label at the centre pixel of every 8 x 8 cell of the padded grid; cells whose centre
    lies off the picture get 255 (outside="ignore") or the nearest edge pixel's label ("edge").

    The centre, not the top-left pixel that the affinity training's nearest downsampling picks
    (retab.data.transforms.nearest_resize, the published labels): a stride-8 feature describes the
    cell around it, so the centre is the fairer reference for measuring it."""
    gh, gw = grid_size(*gt.shape)
    pad = ((0, gh * FEATURE_STRIDE - gt.shape[0]), (0, gw * FEATURE_STRIDE - gt.shape[1]))
    padded = np.pad(gt, pad, mode="edge") if outside == "edge" else np.pad(gt, pad, constant_values=IGNORE)
    centre = FEATURE_STRIDE // 2
    return padded[centre::FEATURE_STRIDE, centre::FEATURE_STRIDE]


def _fill_ignored(gt: np.ndarray) -> np.ndarray:
    """GT with its 255 band (and anything else ignored) replaced by the nearest labelled neighbour,
    grown one pixel at a time; what is left at the end (no labelled pixel at all) becomes 0."""
    out = gt.astype(np.int64)
    while (out == IGNORE).any():
        padded = np.pad(out, 1, mode="edge")
        grown = out.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = padded[1 + dy:1 + dy + out.shape[0], 1 + dx:1 + dx + out.shape[1]]
                take = (grown == IGNORE) & (shifted != IGNORE)
                grown[take] = shifted[take]
        if (grown == out).all():
            grown[grown == IGNORE] = 0
        out = grown
    return out


def grid_ceiling_labels(gt: np.ndarray) -> np.ndarray:
    """Labels (H, W) of the one-hot GT (band filled) average-pooled to the grid, upsampled, argmax."""
    filled = _fill_ignored(gt)
    one_hot = torch.from_numpy(np.eye(NUM_LABELS, dtype=np.float32)[filled].transpose(2, 0, 1).copy())
    pooled = downsample_scores(pad_to_multiple(one_hot))
    return labels_from_scores(upsample_scores(pooled, *gt.shape).numpy())


def perfect_affinity_features(gt: np.ndarray) -> torch.Tensor:
    """Features [21, gh, gw] whose walk affinity is 1 within a GT label and ~0 across (band filled)."""
    cells = _cell_centre_labels(_fill_ignored(gt), outside="edge")
    one_hot = np.eye(NUM_LABELS, dtype=np.float32)[cells].transpose(2, 0, 1)
    return torch.from_numpy(one_hot * PERFECT_FEATURE_SCALE)


def perfect_affinity_labels(cam_dict: dict, gt: np.ndarray, alpha: float = WALK_ALPHA, beta: float = WALK_BETA,
                            logt: int = WALK_LOGT) -> np.ndarray:
    """Labels (H, W) of PSA's walk over the CAM dict with the perfect affinity of `gt`."""
    height, width = gt.shape
    scores = stage1_scores(cam_dict, height, width, alpha)
    walked = random_walk(perfect_affinity_features(gt), scores, stage1_labels(cam_dict), "psa",
                         beta=beta, logt=logt)
    return labels_from_scores(walked)


def pair_label_agreement(features: torch.Tensor, gt: np.ndarray, radius: int = AFFINITY_RADIUS):
    """(affinities, same, labels_from, labels_to) of the walk's pairs of one image: the affinity
    exp(-mean |f_p - f_q|) of each pair, whether the GT labels at the two cell centres agree, and
    those labels; pairs with an ignored (255) end are left out."""
    gh, gw = features.shape[1:]
    cells = _cell_centre_labels(gt).ravel()
    ind_from, ind_to = pair_indices(gh, gw, radius)
    aff = pair_affinities(features[None].float(), radius)[0].cpu().numpy()
    label_from, label_to = cells[ind_from], cells[ind_to]
    keep = (label_from != IGNORE) & (label_to != IGNORE)
    return aff[keep], (label_from == label_to)[keep], label_from[keep], label_to[keep]


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    values = np.concatenate([positive, negative])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based, averaged over ties
    rank_sum = mean_rank[inverse[:positive.size]].sum()
    return float((rank_sum - positive.size * (positive.size + 1) / 2) / (positive.size * negative.size))


def label_grid_counts(grid: np.ndarray, gt_grid: np.ndarray) -> dict[str, int]:
    """Counts of one training label grid (0 background, 1..20 a class, 255 unsure) against the GT at
    the same cells (`nearest`-downsampled as the base samples' labels; 255 cells are not counted):
    cells labelled foreground and how many carry the GT's label, cells labelled background and how
    many are GT background, and GT foreground cells (the recall's denominator)."""
    grid, gt_grid = np.asarray(grid), np.asarray(gt_grid)
    if grid.shape != gt_grid.shape:
        raise ValueError(f"label grid {grid.shape} and GT grid {gt_grid.shape} differ")
    known = gt_grid != IGNORE
    fg = known & (grid != 0) & (grid != IGNORE)
    bg = known & (grid == 0)
    return {"fg_cells": int(fg.sum()), "fg_right": int((fg & (grid == gt_grid)).sum()),
            "bg_cells": int(bg.sum()), "bg_right": int((bg & (gt_grid == 0)).sum()),
            "gt_fg_cells": int((known & (gt_grid != 0)).sum())}


def cell_majority_labels(gt: np.ndarray, stride: int = FEATURE_STRIDE) -> np.ndarray:
    """The most frequent label of each stride x stride cell (uint8 [H // stride, W // stride]),
    255 pixels not counted, 255 where a cell has no other pixel; ties go to the smaller label.
    The grid is the affinity trainings' (a remainder below `stride` is dropped)."""
    rows, cols = gt.shape[0] // stride, gt.shape[1] // stride
    cells = np.asarray(gt)[:rows * stride, :cols * stride].reshape(rows, stride, cols, stride)
    cells = cells.transpose(0, 2, 1, 3).reshape(rows, cols, stride * stride)
    counts = np.stack([(cells == label).sum(axis=-1) for label in range(NUM_LABELS)], axis=-1)
    labels = counts.argmax(axis=-1).astype(np.uint8)
    labels[counts.sum(axis=-1) == 0] = IGNORE
    return labels


PAIR_KINDS = ("bg_pos", "fg_pos", "neg")


def _kind_counts(pair_labels) -> dict[str, int]:
    """(bg_pos, fg_pos, neg) 0/1 vectors of `affinity_labels` -> how many pairs of each kind."""
    return {kind: int((pairs > 0).sum()) for kind, pairs in zip(PAIR_KINDS, pair_labels)}


def taught_pairs(grid: np.ndarray, radius: int = AFFINITY_RADIUS) -> dict[str, int]:
    """How many pairs of each kind (positive background, positive foreground, negative) an affinity
    training's label grid teaches."""
    return _kind_counts(affinity_labels(grid, radius))


def pair_label_accuracy(grid: np.ndarray, reference: np.ndarray, radius: int = AFFINITY_RADIUS) -> dict[str, int]:
    """Counts of the affinity pairs a training label grid teaches against a reference grid of the
    same cells: for each kind (positive background, positive foreground, negative) how many pairs
    the grid labels so and how many of them the reference labels the same way ("<kind>_right");
    `labelled` / `reference` count the pairs of any kind in each."""
    grid, reference = np.asarray(grid), np.asarray(reference)
    if grid.shape != reference.shape:
        raise ValueError(f"label grid {grid.shape} and reference grid {reference.shape} differ")
    ours, theirs = affinity_labels(grid, radius), affinity_labels(reference, radius)
    counts = _kind_counts(ours)
    for kind, mine, truth in zip(PAIR_KINDS, ours, theirs):
        counts[f"{kind}_right"] = int(((mine > 0) & (truth > 0)).sum())
    counts["labelled"] = sum(counts[kind] for kind in PAIR_KINDS)  # the kinds never overlap
    counts["reference"] = sum(_kind_counts(theirs).values())
    return counts


def _within(mask: np.ndarray, r: int) -> np.ndarray:
    """Pixels within Chebyshev distance r of `mask` (a square dilation, edges not wrapped)."""
    h, w = mask.shape
    padded = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def boundary_flag_counts(gt: np.ndarray, target: np.ndarray, outline_radius: int = 3,
                         interior_radius: int = 4) -> dict[int, dict[str, int]]:
    """Per GT object label (1..20) of the picture: {"outline", "outline_flagged", "interior",
    "interior_flagged"}. Outline: the pixels within `outline_radius` of the object's edge on either
    side (its band of 255 included); interior: its pixels farther than `interior_radius` from any
    other pixel. Flagged: boundary (0) in the target map (prop_boundary_target's, 255 elsewhere)."""
    counts = {}
    boundary = target == 0
    for label in np.unique(gt):
        if label in (0, IGNORE):
            continue
        obj = gt == label
        outline = _within(obj, outline_radius) & _within(~obj, outline_radius)
        interior = ~_within(~obj, interior_radius)
        counts[int(label)] = {"outline": int(outline.sum()), "outline_flagged": int((outline & boundary).sum()),
                              "interior": int(interior.sum()),
                              "interior_flagged": int((interior & boundary).sum())}
    return counts


def label_change_counts(gt: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict[int, dict[str, int]]:
    """Per object label (1..20) in the GT or either labelling: {"gt", "filled", "lost",
    "leak_removed", "leak_added"}. Filled: its GT pixels labelled something else before and it
    after; lost: the reverse. Leak removed: pixels of another GT label (not 255) labelled it before
    and not after; leak added: the reverse. Pixels with GT 255 are not counted."""
    gt, before, after = np.asarray(gt), np.asarray(before), np.asarray(after)
    if not gt.shape == before.shape == after.shape:
        raise ValueError(f"shapes differ: gt {gt.shape}, before {before.shape}, after {after.shape}")
    valid = gt != IGNORE
    counts = {}
    for label in np.union1d(np.union1d(np.unique(gt[valid]), np.unique(before[valid])), np.unique(after[valid])):
        if label == 0:
            continue
        is_obj, was, now = (gt == label) & valid, (before == label) & valid, (after == label) & valid
        other = valid & ~is_obj
        counts[int(label)] = {"gt": int(is_obj.sum()), "filled": int((is_obj & ~was & now).sum()),
                              "lost": int((is_obj & was & ~now).sum()),
                              "leak_removed": int((other & was & ~now).sum()),
                              "leak_added": int((other & ~was & now).sum())}
    return counts
