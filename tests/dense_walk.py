"""SPEC 4's random walk written out densely (an N x N matrix, as the published code builds it):
the reference `retab.random_walk.random_walk` is tested against and benchmarked against."""
from __future__ import annotations

import numpy as np
import torch

from retab.affinity import neighbour_offsets
from retab.published import AFFINITY_RADIUS, WALK_BETA, WALK_LOGT
from retab.random_walk import _as_bool_vector, _check_walk_inputs, _pooled, _walk_labels, mode_radius, upsample_scores
from retab.voc import NUM_LABELS

def _dense_pair_mask(gh: int, gw: int, radius: int, device) -> torch.Tensor:
    """Bool [N, N]: M[p, q] = (p, q) is a pair, from coordinates alone (independent of `pair_indices`)."""
    ys = torch.arange(gh, device=device, dtype=torch.int16).repeat_interleave(gw)
    xs = torch.arange(gw, device=device, dtype=torch.int16).repeat(gh)
    dy = ys[None, :] - ys[:, None]  # q - p
    dx = xs[None, :] - xs[:, None]
    in_half = torch.zeros_like(dy, dtype=torch.bool)
    for ody, odx in neighbour_offsets(radius):
        in_half |= (dy == ody) & (dx == odx)
    del dy, dx
    border = radius - 1
    p_in_window = (ys <= gh - 1 - border) & (xs >= border) & (xs <= gw - 1 - border)
    return in_half & p_in_window[:, None]


def _dense_affinities(features: torch.Tensor, mask: torch.Tensor, chunk: int = 1 << 15) -> torch.Tensor:
    """Dense [N, N] matrix with exp(-mean_c |f_p - f_q|) where mask[p, q], 0 elsewhere."""
    flat = features.reshape(features.shape[0], -1)
    dense = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
    p_idx, q_idx = mask.nonzero(as_tuple=True)
    for start in range(0, p_idx.numel(), chunk):
        p, q = p_idx[start:start + chunk], q_idx[start:start + chunk]
        dense[p, q] = torch.exp(-(flat[:, p] - flat[:, q]).abs().mean(dim=0))
    return dense


def _dense_adjacency(pair_aff: torch.Tensor, mode: str, nonboundary: torch.Tensor) -> torch.Tensor:
    """A from the dense pair affinities D[p, q] (p -> q in the half neighbourhood), plus the identity."""
    nb = nonboundary
    if mode == "psa":
        half = pair_aff
        adjacency = half + half.t()
    elif mode == "stage1":
        half = pair_aff * (nb[:, None] & nb[None, :])
        adjacency = half + half.t()
    else:
        half = pair_aff * (~nb[:, None] & ~nb[None, :])
        p_nonboundary_q_boundary = pair_aff * (nb[:, None] & ~nb[None, :])  # entry A[p, q]
        p_boundary_q_nonboundary = pair_aff * (~nb[:, None] & nb[None, :])  # entry A[q, p]
        adjacency = half + half.t() + p_nonboundary_q_boundary + p_boundary_q_nonboundary.t()
    return adjacency + torch.eye(adjacency.shape[0], dtype=adjacency.dtype, device=adjacency.device)


@torch.no_grad()
def dense_random_walk_reference(features: torch.Tensor, scores: np.ndarray, present_labels, mode: str,
                                nonboundary_grid=None, beta: float = WALK_BETA, logt: int = WALK_LOGT, radius: int = AFFINITY_RADIUS,
                                dtype: torch.dtype = torch.float64) -> np.ndarray:
    """SPEC 4 written out densely: dense A, A ** beta, column normalisation, T ** (2 ** logt) by
    torch.linalg.matrix_power (repeated squaring), scores (all 21 channels) @ T. Same inputs and
    output as `random_walk`; memory O(N^2), time O(logt N^3). For tests and the benchmark only.
    """
    scores = np.asarray(scores)
    height, width = scores.shape[1:]
    gh, gw = _check_walk_inputs(features, scores, mode, nonboundary_grid)
    labels = _walk_labels(present_labels)
    device = features.device
    n = gh * gw
    kept = np.zeros_like(scores)
    kept[labels] = scores[labels]
    grid_scores = _pooled(kept, list(range(NUM_LABELS)), device, dtype).reshape(NUM_LABELS, n)

    walk_r = mode_radius(mode, gh, gw, radius)
    pair_aff = _dense_affinities(features.to(dtype), _dense_pair_mask(gh, gw, walk_r, device))
    if mode == "psa":
        nonboundary = torch.ones(n, dtype=torch.bool, device=device)
    else:
        nonboundary = _as_bool_vector(nonboundary_grid, device)
    transition = _dense_adjacency(pair_aff, mode, nonboundary) ** beta
    del pair_aff
    transition = transition / transition.sum(dim=0, keepdim=True)
    transition = torch.linalg.matrix_power(transition, 2 ** logt)
    walked = (grid_scores @ transition).reshape(NUM_LABELS, gh, gw)
    return upsample_scores(walked, height, width).cpu().numpy()
