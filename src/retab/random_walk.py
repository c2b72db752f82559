"""The random walk of PSA and of RETAB's two boundary-aware stages (SPEC 3 and 4), sparse and exact.

One image at a time: scores (21, H, W) at full size are zero-padded to a multiple of 8, 8x8
average-pooled to the feature grid, multiplied 2**logt times by the sparse transition matrix T,
bilinearly upsampled and cropped back. The published code builds the dense N x N matrix and raises
it to the power 2**logt; applying the sparse T to the scores 2**logt times is the same product
(associativity), costs O(2**logt * nnz * channels) instead of O(logt * N**3), and never stores an
N x N matrix. Only the channels present in the image are propagated.

Modes (which pairs of the radius neighbourhood enter A; `nonboundary` is True where m = 1):
- 'psa': every pair, symmetric (PSA's walk; the radius is never shrunk, as in PSA).
- 'stage1': pairs with both ends non-boundary, symmetric.
- 'stage2': boundary-boundary pairs, symmetric, plus one directed entry A[non-boundary, boundary]
  for every pair with exactly one boundary end.
All add the identity; T = A ** beta / column sums; propagated scores = scores @ T ** (2 ** logt).

The straightforward dense version, for the tests and the benchmark, is tests/dense_walk.py.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from retab.affinity import pair_affinities, pair_indices
from retab.data.transforms import nearest_resize
from retab.misc.errors import RetabError
from retab.published import AFFINITY_RADIUS, FEATURE_STRIDE, WALK_ALPHA, WALK_BETA, WALK_LOGT
from retab.score_format import check_cam_peak
from retab.voc import NUM_CLASSES, NUM_LABELS

MODES = ("psa", "stage1", "stage2")
SMALL_GRID_SIDE = 11  # below this shorter grid side, RETAB shrinks the radius


# ----------------------------------------------------------------------------------------------
# Score arrays at full size
# ----------------------------------------------------------------------------------------------

def _check_map(value, height: int, width: int, what: str) -> tuple[np.ndarray, float]:
    """(the map as float32, its maximum), its shape and values checked."""
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape != (height, width):
        raise RetabError(f"{what}: map has shape {arr.shape}, expected ({height}, {width})")
    low, high = arr.min(), arr.max()  # NaN reaches both; two reductions cost less than np.isfinite(arr).all()
    if not (np.isfinite(low) and np.isfinite(high)):  # NaN would walk into every label and argmax to background
        raise RetabError(f"{what}: map holds NaN or infinite values")
    return arr, float(high)


def stage1_scores(cam_dict: dict, height: int, width: int, alpha: float = WALK_ALPHA,
                  source: str = "CAM dict") -> np.ndarray:
    """CAM dict {class 0..19: HxW} -> float32 (21, H, W): channel k+1 = CAM k, channel 0 = (1 - max CAM) ** alpha.

    The max runs over the classes in the dict; with no class it is 0, so the background is 1.
    """
    scores = np.zeros((NUM_LABELS, height, width), dtype=np.float32)
    for key, cam in cam_dict.items():
        k = int(key)
        if not 0 <= k < NUM_CLASSES:
            raise RetabError(f"{source}: class key {key!r} is outside 0..{NUM_CLASSES - 1}")
        scores[k + 1], peak = _check_map(cam, height, width, f"{source} (class {k})")
        check_cam_peak(peak, k, source)
    max_cam = scores[1:].max(axis=0) if cam_dict else np.zeros((height, width), dtype=np.float32)
    scores[0] = np.power(1.0 - max_cam, alpha)
    return scores


def stage1_labels(cam_dict: dict) -> list[int]:
    """Labels (channels) stage 1 propagates for this CAM dict: 0 and k+1 for each class k."""
    return [0] + sorted(int(k) + 1 for k in cam_dict)


def stage2_scores(score_dict: dict, height: int, width: int, source: str = "score dict") -> np.ndarray:
    """Score dict {label 0..20: HxW} (stage 1's output) -> float32 (21, H, W) with channel k = dict[k]."""
    scores = np.zeros((NUM_LABELS, height, width), dtype=np.float32)
    for key, value in score_dict.items():
        k = int(key)
        if not 0 <= k < NUM_LABELS:
            raise RetabError(f"{source}: key {key!r} is outside 0..{NUM_LABELS - 1}")
        scores[k] = _check_map(value, height, width, f"{source} (key {k})")[0]
    return scores


def labels_from_scores(scores: np.ndarray) -> np.ndarray:
    """(C, H, W) scores -> uint8 label map argmax over C (ties go to the lower label, as np.argmax)."""
    return np.argmax(scores, axis=0).astype(np.uint8)


def score_dict(scores: np.ndarray, keys) -> dict[int, np.ndarray]:
    """The output dict {key: float32 map} for the given channels of a (21, H, W) array."""
    return {int(k): np.ascontiguousarray(scores[int(k)], dtype=np.float32) for k in keys}


# ----------------------------------------------------------------------------------------------
# Full size <-> feature grid
# ----------------------------------------------------------------------------------------------

def grid_size(height: int, width: int) -> tuple[int, int]:
    """Feature grid of an H x W image: (ceil(H/8), ceil(W/8))."""
    return math.ceil(height / FEATURE_STRIDE), math.ceil(width / FEATURE_STRIDE)


def pad_to_multiple(x: torch.Tensor, multiple: int = FEATURE_STRIDE) -> torch.Tensor:
    """Zero-pad the last two dims (bottom, right) of x [..., H, W] up to multiples of `multiple`."""
    h, w = x.shape[-2:]
    pad_h = -h % multiple
    pad_w = -w % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def downsample_scores(x: torch.Tensor) -> torch.Tensor:
    """x [C, H, W] (H, W multiples of 8) -> [C, H/8, W/8] by 8x8 average pooling."""
    return F.avg_pool2d(x.unsqueeze(0), kernel_size=FEATURE_STRIDE, stride=FEATURE_STRIDE).squeeze(0)


def upsample_scores(grid_scores: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[C, gh, gw] -> [C, H, W]: bilinear (align_corners=False) to the padded size 8gh x 8gw, then crop."""
    gh, gw = grid_scores.shape[-2:]
    up = F.interpolate(grid_scores.unsqueeze(0), size=(gh * FEATURE_STRIDE, gw * FEATURE_STRIDE),
                       mode="bilinear", align_corners=False)
    return up[0, :, :height, :width]


def boundary_grid(target_map: np.ndarray, grid_h: int, grid_w: int, sampling: str = "nearest") -> np.ndarray:
    """Boundary target map (HxW, 0 = boundary, 255 or 1 = non-boundary) -> bool (grid_h, grid_w), True = non-boundary.

    PyTorch's nearest interpolation (the published "nearest": grid cell (i, j) takes pixel
    (floor(i*H/grid_h), floor(j*W/grid_w)); "nearest-exact" takes the cell's centre pixel instead).
    """
    return nearest_resize(np.asarray(target_map) != 0, grid_h, grid_w, sampling)


def walk_radius(grid_h: int, grid_w: int, radius: int = AFFINITY_RADIUS) -> int:
    """RETAB's radius: (shorter side - 1) // 2 when the shorter grid side is below 11, else `radius`."""
    shorter = min(grid_h, grid_w)
    return (shorter - 1) // 2 if shorter < SMALL_GRID_SIDE else radius


def mode_radius(mode: str, grid_h: int, grid_w: int, radius: int = AFFINITY_RADIUS) -> int:
    """The radius a mode walks with: PSA keeps `radius` always (SPEC 3), the RETAB stages use `walk_radius`."""
    _check_mode(mode)
    return radius if mode == "psa" else walk_radius(grid_h, grid_w, radius)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise RetabError(f"random walk mode must be one of {', '.join(MODES)}, got {mode!r}")


# ----------------------------------------------------------------------------------------------
# Transition matrix and propagation
# ----------------------------------------------------------------------------------------------

def _selected_entries(ind_from: torch.Tensor, ind_to: torch.Tensor, values: torch.Tensor, mode: str,
                      nonboundary: torch.Tensor | None):
    """(rows, cols, values) of the off-diagonal entries of A for a mode (SPEC 4)."""
    if mode == "psa":
        return (torch.cat([ind_from, ind_to]), torch.cat([ind_to, ind_from]), torch.cat([values, values]))
    nb_from = nonboundary[ind_from]
    nb_to = nonboundary[ind_to]
    if mode == "stage1":
        keep = nb_from & nb_to
        f, t, v = ind_from[keep], ind_to[keep], values[keep]
        return torch.cat([f, t]), torch.cat([t, f]), torch.cat([v, v])
    both_boundary = ~nb_from & ~nb_to
    f, t, v = ind_from[both_boundary], ind_to[both_boundary], values[both_boundary]
    one_boundary = nb_from ^ nb_to
    of, ot, ov = ind_from[one_boundary], ind_to[one_boundary], values[one_boundary]
    from_is_nonboundary = nb_from[one_boundary]
    directed_rows = torch.where(from_is_nonboundary, of, ot)  # the non-boundary end
    directed_cols = torch.where(from_is_nonboundary, ot, of)  # the boundary end
    return torch.cat([f, t, directed_rows]), torch.cat([t, f, directed_cols]), torch.cat([v, v, ov])


def _as_bool_vector(mask, device) -> torch.Tensor:
    """A boundary mask (numpy or torch, any shape) as a flat bool tensor on `device`."""
    if isinstance(mask, torch.Tensor):
        return mask.to(device=device, dtype=torch.bool).reshape(-1)
    return torch.from_numpy(np.asarray(mask, dtype=bool).reshape(-1)).to(device)


def transition_matrix(aff_values: torch.Tensor, ind_from, ind_to, n: int, mode: str = "psa",
                      nonboundary=None, beta: float = WALK_BETA) -> torch.Tensor:
    """Sparse column-stochastic T (n x n, coalesced COO, on aff_values' device) = A**beta / column sums.

    aff_values [P]: affinity of pair (ind_from[i], ind_to[i]) (flat grid indices, each unordered pair
    at most once, as `pair_indices` gives). nonboundary: bool [n] (True where m = 1), required by
    'stage1' and 'stage2'. A holds the mode's pairs (module docstring) plus the identity.
    """
    _check_mode(mode)
    device = aff_values.device
    ind_from = torch.as_tensor(ind_from, dtype=torch.long, device=device)
    ind_to = torch.as_tensor(ind_to, dtype=torch.long, device=device)
    if mode != "psa":
        if nonboundary is None:
            raise RetabError(f"random walk mode {mode} needs a boundary mask")
        nonboundary = _as_bool_vector(nonboundary, device)
        if nonboundary.numel() != n:
            raise RetabError(f"boundary mask has {nonboundary.numel()} cells, expected {n}")
    rows, cols, values = _selected_entries(ind_from, ind_to, aff_values, mode, nonboundary)
    diagonal = torch.arange(n, device=device)
    rows = torch.cat([rows, diagonal])
    cols = torch.cat([cols, diagonal])
    values = torch.cat([values, torch.ones(n, dtype=aff_values.dtype, device=device)]) ** beta
    column_sums = torch.zeros(n, dtype=values.dtype, device=device).index_add_(0, cols, values)
    values = values / column_sums[cols]
    # The entries are built in range, so the invariant checks are skipped, said explicitly through the
    # context manager: torch 2.11 warned on every walk even with check_invariants=False (pytorch#178274).
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        matrix = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n))
    return matrix.coalesce()


def propagate(scores: torch.Tensor, transition: torch.Tensor, logt: int = WALK_LOGT) -> torch.Tensor:
    """scores [C, N] @ T ** (2 ** logt), as 2 ** logt sparse products: x <- T^t x with x = scores^t [N, C].

    Row-major CSR of T^t times a thin dense matrix is the fast orientation of torch's sparse kernels.
    """
    with warnings.catch_warnings():  # torch flags its CSR support as beta on every conversion
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        transposed = transition.t().coalesce().to_sparse_csr()
    x = scores.t().contiguous()
    for _ in range(2 ** logt):
        x = torch.sparse.mm(transposed, x)
    return x.t().contiguous()


# ----------------------------------------------------------------------------------------------
# One image end to end
# ----------------------------------------------------------------------------------------------

def _check_walk_inputs(features: torch.Tensor, scores: np.ndarray, mode: str, nonboundary_grid):
    """Validate shapes; return the grid (gh, gw)."""
    _check_mode(mode)
    if scores.ndim != 3 or scores.shape[0] != NUM_LABELS:
        raise RetabError(f"random walk: scores must be ({NUM_LABELS}, H, W), got {scores.shape}")
    gh, gw = grid_size(*scores.shape[1:])
    if features.dim() != 3 or tuple(features.shape[1:]) != (gh, gw):
        raise RetabError(f"random walk: affinity features have shape {tuple(features.shape)}, "
                         f"expected (C, {gh}, {gw}) for a {scores.shape[1]}x{scores.shape[2]} image")
    if mode != "psa":
        shape = None if nonboundary_grid is None else tuple(nonboundary_grid.shape)
        if shape != (gh, gw):
            raise RetabError(f"random walk {mode}: boundary grid has shape {shape}, expected ({gh}, {gw})")
    return gh, gw


def _walk_labels(present_labels) -> list[int]:
    labels = sorted({0} | {int(k) for k in present_labels})
    if labels[-1] >= NUM_LABELS or labels[0] < 0:
        raise RetabError(f"random walk: present labels {labels} are outside 0..{NUM_LABELS - 1}")
    return labels


def _pooled(scores: np.ndarray, labels: list[int], device, dtype) -> torch.Tensor:
    """The chosen channels of the full-size scores, zero-padded and pooled: [len(labels), gh, gw]."""
    chosen = torch.from_numpy(np.ascontiguousarray(scores[labels])).to(device=device, dtype=dtype)
    return downsample_scores(pad_to_multiple(chosen))


@torch.no_grad()
def random_walk(features: torch.Tensor, scores: np.ndarray, present_labels, mode: str,
                nonboundary_grid=None, beta: float = WALK_BETA, logt: int = WALK_LOGT, radius: int = AFFINITY_RADIUS,
                dtype: torch.dtype = torch.float64) -> np.ndarray:
    """One image: features [C, gh, gw] (gh, gw = ceil(H/8), ceil(W/8)), scores (21, H, W) -> (21, H, W) float32.

    present_labels: the label channels to propagate (0 = background is always added); the other
    channels come back as zeros. nonboundary_grid: bool (gh, gw) from `boundary_grid`, needed by
    'stage1' and 'stage2'. Runs on features.device. Affinities are computed in float32; the walk
    runs in `dtype`: float64 by default because 256 sequential float32 products drift by ~1e-5
    relative from the exact result, while float64 costs little here (the walk is memory-bound).
    """
    scores = np.asarray(scores)
    height, width = scores.shape[1:]
    gh, gw = _check_walk_inputs(features, scores, mode, nonboundary_grid)
    labels = _walk_labels(present_labels)
    device = features.device
    grid_scores = _pooled(scores, labels, device, dtype).reshape(len(labels), gh * gw)

    walk_r = mode_radius(mode, gh, gw, radius)
    ind_from, ind_to = pair_indices(gh, gw, walk_r)
    aff = pair_affinities(features.unsqueeze(0).float(), walk_r)[0].to(dtype)
    transition = transition_matrix(aff, ind_from, ind_to, gh * gw, mode, nonboundary_grid, beta)
    walked = propagate(grid_scores, transition, logt).reshape(len(labels), gh, gw)

    out = np.zeros((NUM_LABELS, height, width), dtype=np.float32)
    out[labels] = upsample_scores(walked, height, width).cpu().numpy()
    return out
