"""Pixel-pair affinities on the 1/8 feature grid (SPEC 4): the pair set, the affinities, their labels and loss.

Pairs (p, q) have q - p in the half neighbourhood of `neighbour_offsets(radius)`, with p over the grid
minus radius-1 rows at the bottom and radius-1 columns on each side (so q always lies on the grid).

One pair order is used everywhere ("offset-major"): for each offset in `neighbour_offsets` order, every
p of the position window in row-major order. A pair vector therefore has n_offsets * n_positions
entries, and `pair_indices`, `pair_affinities` and `affinity_labels` all agree on it. The grid slicing
that defines this order lives in `_offset_windows` only.
"""
from __future__ import annotations

import numpy as np
import torch

from retab.published import AFFINITY_RADIUS
from retab.voc import IGNORE

NEG_EPS = 1e-5  # the published 1e-5 inside the logarithms and added to the pair counts


def neighbour_offsets(radius: int = AFFINITY_RADIUS) -> list[tuple[int, int]]:
    """Half neighbourhood (dy, dx): (0, 1..r-1), then rows dy = 1..r-1 with dx = -(r-1)..r-1 and dy^2+dx^2 < r^2.

    34 offsets for r = 5; none for r <= 1.
    """
    offsets = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        for dx in range(-radius + 1, radius):
            if dy * dy + dx * dx < radius * radius:
                offsets.append((dy, dx))
    return offsets


def position_window(h: int, w: int, radius: int = AFFINITY_RADIUS) -> tuple[int, int]:
    """(rows, columns) of the window of p: h - (r-1) rows from the top, w - 2(r-1) columns from column r-1.

    Either is 0 when the grid is too small (then there are no pairs).
    """
    border = max(radius - 1, 0)
    return max(h - border, 0), max(w - 2 * border, 0)


def _offset_windows(h: int, w: int, radius: int):
    """For each offset: the (row slice, column slice) of p's window and of q's window on an h x w grid."""
    rows, cols = position_window(h, w, radius)
    if rows == 0 or cols == 0:
        return []
    border = radius - 1
    from_window = (slice(0, rows), slice(border, border + cols))
    windows = []
    for dy, dx in neighbour_offsets(radius):
        to_window = (slice(dy, dy + rows), slice(border + dx, border + dx + cols))
        windows.append((from_window, to_window))
    return windows


def pair_count(h: int, w: int, radius: int = AFFINITY_RADIUS) -> int:
    """Number of pairs on an h x w grid (0 when the grid is too small)."""
    rows, cols = position_window(h, w, radius)
    return len(neighbour_offsets(radius)) * rows * cols if rows and cols else 0


def pair_indices(h: int, w: int, radius: int = AFFINITY_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (int64) into the h*w grid of p (`ind_from`) and q (`ind_to`), in offset-major pair order."""
    flat = np.arange(h * w, dtype=np.int64).reshape(h, w)
    windows = _offset_windows(h, w, radius)
    if not windows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    ind_from = np.concatenate([flat[fw].ravel() for fw, _ in windows])
    ind_to = np.concatenate([flat[tw].ravel() for _, tw in windows])
    return ind_from, ind_to


def pair_affinities(features: torch.Tensor, radius: int = AFFINITY_RADIUS) -> torch.Tensor:
    """features [B, C, h, w] -> affinities [B, n_pairs] (offset-major), a_pq = exp(-mean_c |f_p - f_q|).

    Computed window by window (no index gather), differentiable; used by training and by the walk.
    """
    if features.dim() != 4:
        raise ValueError(f"pair_affinities expects features [B, C, h, w], got shape {tuple(features.shape)}")
    b, _, h, w = features.shape
    windows = _offset_windows(h, w, radius)
    if not windows:
        return features.new_zeros((b, 0))
    (from_rows, from_cols), _ = windows[0]
    f_from = features[:, :, from_rows, from_cols].contiguous()
    # Without autograd, one reused difference buffer avoids a fresh large allocation per offset
    # (3-6x faster at inference sizes); with autograd, each offset keeps its own graph.
    buffer = None if (torch.is_grad_enabled() and features.requires_grad) else torch.empty_like(f_from)
    per_offset = []
    for _, (to_rows, to_cols) in windows:
        f_to = features[:, :, to_rows, to_cols]
        if buffer is None:
            difference = (f_from - f_to).abs()
        else:
            difference = torch.sub(f_from, f_to, out=buffer).abs_()
        distance = difference.mean(dim=1)  # [B, rows, cols]
        per_offset.append(torch.exp(-distance).flatten(1))
    return torch.cat(per_offset, dim=1)


def affinity_labels(label_grid: np.ndarray, radius: int = AFFINITY_RADIUS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label grid (uint8 [h, w], 0 background, 255 ignore) -> float32 0/1 vectors (bg_pos, fg_pos, neg) [n_pairs].

    Positive background: equal labels, both 0. Positive foreground: equal labels, not 0, both < 255.
    Negative: different labels, both < 255. Same offset-major order as `pair_affinities`.
    """
    labels = np.asarray(label_grid)
    if labels.ndim != 2:
        raise ValueError(f"affinity_labels expects a 2-D label grid, got shape {labels.shape}")
    h, w = labels.shape
    bg_pos, fg_pos, neg = [], [], []
    for from_window, to_window in _offset_windows(h, w, radius):
        lp = labels[from_window].ravel()
        lq = labels[to_window].ravel()
        both_valid = (lp < IGNORE) & (lq < IGNORE)
        equal = lp == lq
        bg_pos.append(equal & (lp == 0))
        fg_pos.append(equal & (lp != 0) & both_valid)
        neg.append(~equal & both_valid)

    def as_float(parts):
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)

    return as_float(bg_pos), as_float(fg_pos), as_float(neg)


def affinity_loss(aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor,
                  neg: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """loss = bg/4 + fg/4 + neg/2 (SPEC 4); returns (loss, {'bg', 'fg', 'neg'}).

    All four tensors share a shape ([B, n_pairs] or [n_pairs]). Our reading of the published code: each
    term is a sum over every pair of the whole batch divided by that term's pair count over the whole
    batch (+1e-5), not a per-image mean; an empty set thus gives 0 for its term.
    """
    terms = {
        "bg": _masked_mean(-torch.log(aff + NEG_EPS), bg_pos),
        "fg": _masked_mean(-torch.log(aff + NEG_EPS), fg_pos),
        "neg": _masked_mean(-torch.log(1.0 + NEG_EPS - aff), neg),
    }
    loss = terms["bg"] / 4 + terms["fg"] / 4 + terms["neg"] / 2
    return loss, terms


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / (mask.sum() + NEG_EPS)


def make_affinity_step(radius: int = AFFINITY_RADIUS):
    """step_fn of the affinity trainings: features -> pair affinities -> affinity_loss."""

    def affinity_step(model, batch, device):
        images, (bg_pos, fg_pos, neg) = batch
        features = model(images.to(device, non_blocking=True))
        aff = pair_affinities(features, radius)
        loss, terms = affinity_loss(aff, bg_pos.to(device), fg_pos.to(device), neg.to(device))
        return loss, {f"loss_{k}": float(v.detach()) for k, v in terms.items()}

    return affinity_step
