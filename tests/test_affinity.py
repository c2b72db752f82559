"""Pair set, pair affinities, affinity labels and loss (retab.affinity, SPEC 4) against hand cases."""
import math

import numpy as np
import torch

from retab.affinity import (
    affinity_labels, affinity_loss, neighbour_offsets, pair_affinities, pair_count, pair_indices,
)


def test_neighbour_offsets_radius_5_rows():
    offsets = neighbour_offsets(5)
    assert len(offsets) == 34
    assert offsets[:4] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    # dy = 1, 2: dx = -4..4 (dy^2 + 16 < 25); dy = 3: |dx| <= 3; dy = 4: |dx| <= 2
    assert offsets[4:13] == [(1, dx) for dx in range(-4, 5)]
    assert offsets[13:22] == [(2, dx) for dx in range(-4, 5)]
    assert offsets[22:29] == [(3, dx) for dx in range(-3, 4)]
    assert offsets[29:] == [(4, dx) for dx in range(-2, 3)]


def test_neighbour_offsets_small_radii():
    assert neighbour_offsets(3) == [(0, 1), (0, 2), (1, -2), (1, -1), (1, 0), (1, 1), (1, 2),
                                    (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)]
    assert neighbour_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    assert neighbour_offsets(1) == [] and neighbour_offsets(0) == []


def test_pair_counts_on_grids():
    # 448 crop -> 56 x 56 grid: 34 offsets x (56-4) x (56-8) positions
    ind_from, ind_to = pair_indices(56, 56)
    assert len(ind_from) == len(ind_to) == 34 * 52 * 48 == pair_count(56, 56)
    ind_from, ind_to = pair_indices(13, 20)
    assert len(ind_from) == 34 * 9 * 12
    # too small for any p: fewer than 9 columns or fewer than 5 rows
    for h, w in [(4, 20), (13, 8), (1, 1)]:
        ind_from, ind_to = pair_indices(h, w)
        assert len(ind_from) == len(ind_to) == 0 == pair_count(h, w)


def test_pair_indices_hand_case():
    # 5 x 10 grid, r = 5: p over row 0, columns 4 and 5 (flat 4, 5); offset-major order
    ind_from, ind_to = pair_indices(5, 10)
    assert ind_from.tolist() == [4, 5] * 34
    expected_to = []
    for dy, dx in neighbour_offsets(5):
        expected_to += [dy * 10 + 4 + dx, dy * 10 + 5 + dx]
    assert ind_to.tolist() == expected_to
    assert ind_to[:8].tolist() == [5, 6, 6, 7, 7, 8, 8, 9]  # (0, 1..4)
    assert ind_to[-2:].tolist() == [46, 47]  # (4, 2): row 4, columns 6 and 7


def test_pair_affinities_match_gathered_pairs():
    torch.manual_seed(0)
    features = torch.randn(2, 6, 11, 14)
    aff = pair_affinities(features, 5)
    ind_from, ind_to = pair_indices(11, 14, 5)
    flat = features.flatten(2)
    expected = torch.exp(-(flat[:, :, ind_from] - flat[:, :, ind_to]).abs().mean(dim=1))
    assert aff.shape == (2, len(ind_from))
    torch.testing.assert_close(aff, expected, rtol=0, atol=1e-6)


def test_pair_affinities_gradient_path_equals_inference_path():
    torch.manual_seed(1)
    features = torch.randn(1, 4, 9, 12, dtype=torch.float64, requires_grad=True)
    with_grad = pair_affinities(features, 3)
    with torch.no_grad():
        without_grad = pair_affinities(features, 3)
    torch.testing.assert_close(with_grad.detach(), without_grad, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda f: pair_affinities(f, 3), (features[:, :, :6, :7],))


def test_affinity_labels_hand_case():
    # r = 2: offsets (0,1), (1,-1), (1,0), (1,1); p = (0,1), (0,2), (0,3)
    grid = np.array([[0, 0, 1, 255, 255],
                     [0, 1, 1, 2, 255]], dtype=np.uint8)
    bg, fg, neg = affinity_labels(grid, radius=2)
    # pairs per offset, p = 0 / 1 / 255:
    # (0,1):  0-1 neg,  1-255 none,  255-255 none
    # (1,-1): 0-0 bg,   1-1 fg,      255-1 none
    # (1,0):  0-1 neg,  1-1 fg,      255-2 none
    # (1,1):  0-1 neg,  1-2 neg,     255-255 none
    assert bg.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert fg.tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert neg.tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0]
    assert bg.dtype == fg.dtype == neg.dtype == np.float32


def test_affinity_labels_radius_5_against_pair_definition():
    rng = np.random.default_rng(3)
    grid = rng.choice(np.array([0, 0, 3, 7, 255], dtype=np.uint8), size=(12, 15))
    bg, fg, neg = affinity_labels(grid, radius=5)
    ind_from, ind_to = pair_indices(12, 15, 5)
    lp, lq = grid.ravel()[ind_from], grid.ravel()[ind_to]
    for p_label, q_label, b, f, n in zip(lp, lq, bg, fg, neg):
        valid = p_label != 255 and q_label != 255
        assert b == (p_label == q_label == 0)
        assert f == (valid and p_label == q_label != 0)
        assert n == (valid and p_label != q_label)
    assert bg.sum() > 0 and fg.sum() > 0 and neg.sum() > 0


def test_affinity_loss_hand_case():
    aff = torch.tensor([0.5, 0.25, 0.8, 0.1, 0.3])
    bg = torch.tensor([1.0, 0, 0, 0, 0])
    fg = torch.tensor([0, 1.0, 1, 0, 0])
    neg = torch.tensor([0, 0, 0, 1.0, 0])
    loss, parts = affinity_loss(aff, bg, fg, neg)
    eps = 1e-5
    bg_term = -math.log(0.5 + eps) / (1 + eps)
    fg_term = (-math.log(0.25 + eps) - math.log(0.8 + eps)) / (2 + eps)
    neg_term = -math.log(1 + eps - 0.1) / (1 + eps)
    assert math.isclose(parts["bg"].item(), bg_term, rel_tol=1e-6)
    assert math.isclose(parts["fg"].item(), fg_term, rel_tol=1e-6)
    assert math.isclose(parts["neg"].item(), neg_term, rel_tol=1e-6)
    assert math.isclose(loss.item(), bg_term / 4 + fg_term / 4 + neg_term / 2, rel_tol=1e-6)


def test_affinity_loss_empty_set_and_batch_counts():
    aff = torch.tensor([[0.5, 0.2], [0.4, 0.9]], requires_grad=True)
    bg = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # 3 bg pairs over the batch
    fg = torch.zeros(2, 2)  # empty set
    neg = torch.zeros(2, 2)
    loss, parts = affinity_loss(aff, bg, fg, neg)
    assert parts["fg"].item() == 0.0 and parts["neg"].item() == 0.0
    # counts pool over the whole batch (not a mean of per-image means)
    expected_bg = -(math.log(0.5 + 1e-5) + math.log(0.2 + 1e-5) + math.log(0.4 + 1e-5)) / (3 + 1e-5)
    assert math.isclose(parts["bg"].item(), expected_bg, rel_tol=1e-6)
    assert math.isclose(loss.item(), expected_bg / 4, rel_tol=1e-6)
    loss.backward()
    assert aff.grad[1, 1].item() == 0.0 and aff.grad[0, 0].item() < 0
