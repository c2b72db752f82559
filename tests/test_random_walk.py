"""The sparse random walk (retab.random_walk) against hand cases and the dense SPEC-4 reference."""
import warnings

import numpy as np
import pytest
import torch

from dense_walk import dense_random_walk_reference
from retab.affinity import pair_affinities, pair_indices
from retab.misc.errors import RetabError
from retab.random_walk import (
    MODES, boundary_grid, downsample_scores, grid_size, labels_from_scores,
    mode_radius, pad_to_multiple, random_walk, score_dict, stage1_labels, stage1_scores, stage2_scores,
    transition_matrix, walk_radius,
)


def dense(sparse):
    return sparse.to_dense().numpy()


# ----------------------------------------------------------------------------------------------
# Synthetic images: a few regions with distinct affinity features, CAM bumps, random boundaries
# ----------------------------------------------------------------------------------------------

def synthetic_image(height, width, seed, classes=(2, 11)):
    rng = np.random.default_rng(seed)
    gh, gw = grid_size(height, width)
    seeds = rng.uniform(0, 1, size=(3, 2)) * (gh, gw)
    yy, xx = np.mgrid[0:gh, 0:gw]
    region = np.argmin([(yy - sy) ** 2 + (xx - sx) ** 2 for sy, sx in seeds], axis=0)
    centres = rng.normal(size=(3, 8))
    features = centres[region].transpose(2, 0, 1) + 0.1 * rng.normal(size=(8, gh, gw))
    py, px = np.mgrid[0:height, 0:width]
    cams = {}
    for k in classes:
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        bump = np.exp(-((py - cy) ** 2 + (px - cx) ** 2) / (2 * (0.3 * max(height, width)) ** 2))
        cams[k] = (bump / bump.max()).astype(np.float32)
    nonboundary = rng.random((gh, gw)) > 0.3
    return torch.from_numpy(features.astype(np.float32)), cams, nonboundary


# ----------------------------------------------------------------------------------------------
# Score preparation and grid helpers
# ----------------------------------------------------------------------------------------------

def test_walk_radius_and_mode_radius():
    assert walk_radius(7, 13) == 3 and walk_radius(13, 7) == 3
    assert walk_radius(10, 40) == 4 and walk_radius(11, 11) == 5 and walk_radius(47, 63) == 5
    assert walk_radius(2, 2) == 0 and walk_radius(1, 30) == 0
    assert mode_radius("psa", 7, 13) == 5  # PSA never shrinks the radius
    assert mode_radius("stage1", 7, 13) == 3 == mode_radius("stage2", 7, 13)


def test_stage1_scores_hand_case():
    a = np.array([[0.2, 0.9], [0.0, 0.5]], dtype=np.float32)
    b = np.array([[0.4, 0.1], [0.0, 1.0]], dtype=np.float32)
    scores = stage1_scores({2: a, 5: b}, 2, 2, alpha=2)
    assert scores.shape == (21, 2, 2) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores[3], a)
    np.testing.assert_array_equal(scores[6], b)
    np.testing.assert_allclose(scores[0], [[0.36, 0.01], [1.0, 0.0]], rtol=1e-6)
    assert not scores[[1, 2, 4, 5] + list(range(7, 21))].any()
    assert stage1_labels({2: a, 5: b}) == [0, 3, 6]
    empty = stage1_scores({}, 3, 4)
    assert (empty[0] == 1).all() and not empty[1:].any()
    with pytest.raises(RetabError):
        stage1_scores({20: a}, 2, 2)
    with pytest.raises(RetabError):
        stage1_scores({1: a}, 3, 2)


def test_stage2_scores_and_score_dict_round_trip():
    rng = np.random.default_rng(0)
    scores = np.zeros((21, 5, 6), dtype=np.float32)
    scores[[0, 4, 9]] = rng.random((3, 5, 6))
    d = score_dict(scores, [0, 4, 9])
    assert sorted(d) == [0, 4, 9]
    np.testing.assert_array_equal(stage2_scores(d, 5, 6), scores)
    assert labels_from_scores(scores).dtype == np.uint8
    np.testing.assert_array_equal(labels_from_scores(scores), np.argmax(scores, axis=0))


def test_pad_and_downsample():
    x = torch.arange(10 * 13, dtype=torch.float64).reshape(1, 10, 13)
    padded = pad_to_multiple(x)
    assert padded.shape == (1, 16, 16)
    assert torch.equal(padded[:, :10, :13], x) and not padded[:, 10:].any() and not padded[:, :, 13:].any()
    pooled = downsample_scores(padded)
    assert pooled.shape == (1, 2, 2)
    assert pooled[0, 0, 0].item() == x[0, :8, :8].mean().item()
    assert pooled[0, 1, 1].item() == x[0, 8:, 8:].sum().item() / 64  # padding zeros count in the mean
    assert grid_size(375, 500) == (47, 63) and grid_size(56, 104) == (7, 13)


def test_boundary_grid_nearest_indices():
    # 20 x 13 map to a 3 x 2 grid: rows floor(i * 20/3) = 0, 6, 13; columns floor(j * 13/2) = 0, 6
    target = np.full((20, 13), 255, dtype=np.uint8)
    target[0, 0] = 1  # 1 also means non-boundary
    target[6, 6] = 0
    target[13, 0] = 0
    target[7, 6] = 0  # not sampled
    target[6, 7] = 0  # not sampled
    grid = boundary_grid(target, 3, 2)
    assert grid.dtype == bool
    assert grid.tolist() == [[True, True], [True, False], [False, True]]
    # nearest-exact: rows floor((i + 0.5) * 20/3) = 3, 10, 16; columns floor((j + 0.5) * 13/2) = 3, 9
    assert boundary_grid(target, 3, 2, "nearest-exact").all()
    target[10, 9] = 0
    target[16, 3] = 0
    assert boundary_grid(target, 3, 2, "nearest-exact").tolist() == [[True, True], [True, False], [False, True]]


# ----------------------------------------------------------------------------------------------
# Transition matrices: hand cases and structure
# ----------------------------------------------------------------------------------------------

# 2 x 3 grid, radius 2: the only p is flat 1, pairs (1,2), (1,3), (1,4), (1,5)
HAND_AFF = torch.tensor([0.5, 0.6, 0.7, 0.8], dtype=torch.float64)


def column_normalised(a):
    a = np.array(a, dtype=np.float64)
    return a / a.sum(axis=0, keepdims=True)


def hand_transition(mode, nonboundary=None):
    ind_from, ind_to = pair_indices(2, 3, 2)
    assert ind_from.tolist() == [1, 1, 1, 1] and ind_to.tolist() == [2, 3, 4, 5]
    t = transition_matrix(HAND_AFF, ind_from, ind_to, 6, mode, nonboundary, beta=2)
    assert t.is_sparse and t.is_coalesced()
    return dense(t)


def test_transition_psa_hand_case():
    a2 = [[1, 0, 0, 0, 0, 0],  # A ** 2, rows = from, columns = to
          [0, 1, .25, .36, .49, .64],
          [0, .25, 1, 0, 0, 0],
          [0, .36, 0, 1, 0, 0],
          [0, .49, 0, 0, 1, 0],
          [0, .64, 0, 0, 0, 1]]
    np.testing.assert_allclose(hand_transition("psa"), column_normalised(a2), rtol=1e-12)


def test_transition_stage1_hand_case():
    nonboundary = np.array([1, 1, 1, 0, 1, 1], dtype=bool)  # pixel 3 is boundary: pair (1,3) dropped
    a2 = [[1, 0, 0, 0, 0, 0],
          [0, 1, .25, 0, .49, .64],
          [0, .25, 1, 0, 0, 0],
          [0, 0, 0, 1, 0, 0],
          [0, .49, 0, 0, 1, 0],
          [0, .64, 0, 0, 0, 1]]
    np.testing.assert_allclose(hand_transition("stage1", nonboundary), column_normalised(a2), rtol=1e-12)


def test_transition_stage2_hand_case():
    nonboundary = np.array([1, 0, 0, 1, 1, 1], dtype=bool)  # pixels 1, 2 are boundary
    a2 = [[1, 0, 0, 0, 0, 0],
          [0, 1, .25, 0, 0, 0],  # (1,2): boundary-boundary, symmetric
          [0, .25, 1, 0, 0, 0],
          [0, .36, 0, 1, 0, 0],  # (1,3), (1,4), (1,5): only A[non-boundary, boundary]
          [0, .49, 0, 0, 1, 0],
          [0, .64, 0, 0, 0, 1]]
    np.testing.assert_allclose(hand_transition("stage2", nonboundary), column_normalised(a2), rtol=1e-12)
    # the mask may also be a torch tensor of grid shape
    as_tensor = torch.from_numpy(nonboundary.reshape(2, 3))
    np.testing.assert_array_equal(hand_transition("stage2", as_tensor), hand_transition("stage2", nonboundary))


def random_transition(mode, seed, gh=9, gw=14, radius=4):
    rng = np.random.default_rng(seed)
    nonboundary = rng.random(gh * gw) > 0.4
    ind_from, ind_to = pair_indices(gh, gw, radius)
    aff = torch.from_numpy(rng.uniform(0.05, 1.0, size=len(ind_from)))
    t = dense(transition_matrix(aff, ind_from, ind_to, gh * gw, mode, nonboundary, beta=8))
    return t, nonboundary, (ind_from, ind_to)


@pytest.mark.parametrize("seed", [0, 1])
def test_transition_structure_stage2(seed):
    t, nb, _ = random_transition("stage2", seed)
    np.testing.assert_allclose(t.sum(axis=0), 1.0, rtol=1e-12)
    eye = np.eye(len(nb))
    np.testing.assert_array_equal(t[:, nb], eye[:, nb])  # non-boundary columns are identity columns
    assert not t[np.ix_(~nb, nb)].any()  # nothing from a boundary pixel into a non-boundary column
    boundary_columns = t[:, ~nb] - eye[:, ~nb]
    assert (boundary_columns[nb] > 0).any() and (t[np.ix_(~nb, ~nb)] > 0).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_transition_structure_stage1(seed):
    t, nb, _ = random_transition("stage1", seed)
    np.testing.assert_allclose(t.sum(axis=0), 1.0, rtol=1e-12)
    eye = np.eye(len(nb))
    np.testing.assert_array_equal(t[:, ~nb], eye[:, ~nb])  # a boundary pixel's column is the identity
    off_diagonal = t - np.diag(np.diag(t))
    assert not off_diagonal[~nb].any()  # and its row holds nothing but the diagonal
    assert ((off_diagonal > 0) == (off_diagonal.T > 0)).all()  # symmetric support


def test_transition_structure_psa():
    t, nb, (ind_from, ind_to) = random_transition("psa", 2)
    np.testing.assert_allclose(t.sum(axis=0), 1.0, rtol=1e-12)
    support = t > 0
    expected = np.eye(len(nb), dtype=bool)
    expected[ind_from, ind_to] = expected[ind_to, ind_from] = True
    np.testing.assert_array_equal(support, expected)


# ----------------------------------------------------------------------------------------------
# The whole walk against the dense reference
# ----------------------------------------------------------------------------------------------

# (H, W): grids 7x13 (short side below 11, radius 3), 10x8 (radius 3), 16x12, 13x25
WALK_SIZES = [(56, 104), (75, 60), (121, 93), (100, 200)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", WALK_SIZES)
def test_walk_matches_dense_reference(size, mode):
    height, width = size
    features, cams, nonboundary = synthetic_image(height, width, seed=height + width)
    scores = stage1_scores(cams, height, width)
    labels = stage1_labels(cams)
    fast = random_walk(features, scores, labels, mode, nonboundary)
    reference = dense_random_walk_reference(features, scores, labels, mode, nonboundary)
    assert fast.shape == (21, height, width) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    np.testing.assert_array_equal(labels_from_scores(fast), labels_from_scores(reference))
    # the walk really moved the scores (else the comparison would be vacuous)
    assert np.abs(fast[labels] - scores[labels]).max() > 1e-2


def test_stage2_walk_on_stage1_output_matches_reference():
    height, width = 75, 60
    features, cams, nonboundary = synthetic_image(height, width, seed=5)
    stage1 = random_walk(features, stage1_scores(cams, height, width), stage1_labels(cams), "stage1", nonboundary)
    keys = stage1_labels(cams)
    scores = stage2_scores(score_dict(stage1, keys), height, width)
    fast = random_walk(features, scores, keys, "stage2", nonboundary)
    reference = dense_random_walk_reference(features, scores, keys, "stage2", nonboundary)
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("mode", MODES)
def test_single_cell_grid_keeps_the_pooled_scores(mode):
    # an 8 x 8 image is one grid cell: no pairs, T = [1], the output is the 8x8 mean everywhere
    features, cams, nonboundary = synthetic_image(8, 8, seed=1)
    scores = stage1_scores(cams, 8, 8)
    fast = random_walk(features, scores, stage1_labels(cams), mode, nonboundary)
    for k in stage1_labels(cams):
        np.testing.assert_allclose(fast[k], scores[k].mean(), rtol=1e-6)


def test_absent_channels_stay_zero_and_do_not_leak():
    height, width = 56, 104
    features, cams, nonboundary = synthetic_image(height, width, seed=2)
    clean = stage1_scores(cams, height, width)
    labels = stage1_labels(cams)
    absent = [k for k in range(21) if k not in labels]
    noisy = clean.copy()
    noisy[absent] = np.random.default_rng(0).random((len(absent), height, width))
    for mode in MODES:
        out = random_walk(features, noisy, labels, mode, nonboundary)
        assert not out[absent].any()
        np.testing.assert_array_equal(out, random_walk(features, clean, labels, mode, nonboundary))
    # background is always walked, even when not listed
    out = random_walk(features, clean, [3], "psa")
    assert out[0].any() and not out[12].any()


def test_walk_rejects_bad_inputs():
    features, cams, nonboundary = synthetic_image(56, 104, seed=0)
    scores = stage1_scores(cams, 56, 104)
    with pytest.raises(RetabError):
        random_walk(features[:, :6], scores, [0, 3], "psa")  # grid must be ceil(H/8) x ceil(W/8)
    with pytest.raises(RetabError):
        random_walk(features, scores, [0, 3], "stage1")  # boundary grid missing
    with pytest.raises(RetabError):
        random_walk(features, scores, [0, 3], "stage2", nonboundary[:, :5])
    with pytest.raises(RetabError):
        random_walk(features, scores, [0, 3], "stage3", nonboundary)
    with pytest.raises(RetabError):
        random_walk(features, scores, [0, 21], "psa")


def bilinear_axis(n_in, n_out):
    """Weights [n_out, n_in] of align_corners=False linear interpolation by a factor n_out / n_in."""
    weights = np.zeros((n_out, n_in))
    for x in range(n_out):
        src = max((x + 0.5) * n_in / n_out - 0.5, 0.0)
        x0 = int(np.floor(src))
        x1 = min(x0 + 1, n_in - 1)
        weights[x, x0] += 1 - (src - x0)
        weights[x, x1] += src - x0
    return weights


def test_one_step_walk_by_hand():
    # logt = 0: one product with T, built here from pair_affinities, then bilinear upsampling and crop
    height, width = 60, 90
    features, cams, _ = synthetic_image(height, width, seed=4)
    scores = stage1_scores(cams, height, width)
    out = random_walk(features, scores, stage1_labels(cams), "psa", logt=0)
    gh, gw = grid_size(height, width)  # 8 x 12
    ind_from, ind_to = pair_indices(gh, gw, 5)
    aff = pair_affinities(features[None], 5)[0].double()
    t = dense(transition_matrix(aff, ind_from, ind_to, gh * gw, "psa"))
    padded = np.zeros((21, gh * 8, gw * 8))
    padded[:, :height, :width] = scores
    pooled = padded.reshape(21, gh, 8, gw, 8).mean(axis=(2, 4)).reshape(21, -1)
    walked = (pooled @ t).reshape(21, gh, gw)
    upsampled = np.einsum("yi,cij,xj->cyx", bilinear_axis(gh, gh * 8), walked, bilinear_axis(gw, gw * 8))
    np.testing.assert_allclose(out, upsampled[:, :height, :width], rtol=0, atol=1e-6)


def test_building_the_transition_matrix_warns_nothing():
    """The walk builds its sparse matrix with the invariant checks off, saying so explicitly: torch 2.11
    warned "Sparse invariant checks are implicitly disabled" on every walk (pytorch#178274)."""
    ind_from, ind_to = pair_indices(4, 5, 2)
    aff = torch.rand(len(ind_from), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = transition_matrix(aff, ind_from, ind_to, 20, "psa")
    np.testing.assert_allclose(dense(t).sum(axis=0), np.ones(20), rtol=1e-6)
