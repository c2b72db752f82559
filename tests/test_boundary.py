"""Boundary loss and boundary target maps (SPEC 4)."""
import math

import numpy as np
import pytest
import torch

from retab.boundary import boundary_loss, boundary_target_map
from retab.misc.errors import RetabError


def softplus(x):
    return math.log1p(math.exp(x))


def bce_to_one(x):
    return softplus(-x)


def bce_to_zero(x):
    return softplus(x)


def test_loss_matches_hand_computation_pooled_over_the_batch():
    logits = torch.tensor([[[[0.0, 1.0, 2.0]]], [[[-1.0, 3.0, 0.5]]]], requires_grad=True)
    gt = torch.tensor([[[0, 5, 255]], [[0, 0, 7]]], dtype=torch.uint8)
    loss, parts = boundary_loss(logits, gt)
    boundary = bce_to_one(2.0)
    background = (bce_to_zero(0.0) + bce_to_zero(-1.0) + bce_to_zero(3.0)) / 3
    foreground = (bce_to_zero(1.0) + bce_to_zero(0.5)) / 2
    assert parts["boundary"].item() == pytest.approx(boundary, rel=1e-6)
    assert parts["background"].item() == pytest.approx(background, rel=1e-6)
    assert parts["foreground"].item() == pytest.approx(foreground, rel=1e-6)
    assert loss.item() == pytest.approx(boundary + 0.5 * background + 0.5 * foreground, rel=1e-6)
    loss.backward()
    # d/dx of 0.5 * mean over 3 background pixels of softplus(x) = 0.5 * sigmoid(x) / 3.
    assert logits.grad[1, 0, 0, 1].item() == pytest.approx(0.5 / 3 / (1 + math.exp(-3.0)), rel=1e-6)
    # d/dx of softplus(-x) over the single boundary pixel = sigmoid(x) - 1.
    assert logits.grad[0, 0, 0, 2].item() == pytest.approx(1 / (1 + math.exp(-2.0)) - 1, rel=1e-6)


def test_loss_without_boundary_pixels_keeps_the_other_terms():
    logits = torch.tensor([[[[0.3, -2.0], [1.5, 0.0]]]])
    gt = torch.tensor([[[0, 3], [3, 3]]])
    loss, parts = boundary_loss(logits, gt)
    foreground = (bce_to_zero(-2.0) + bce_to_zero(1.5) + bce_to_zero(0.0)) / 3
    assert parts["boundary"].item() == 0
    assert loss.item() == pytest.approx(0.5 * bce_to_zero(0.3) + 0.5 * foreground, rel=1e-6)


def test_loss_with_only_boundary_pixels_is_the_boundary_mean():
    logits = torch.tensor([[[[0.3, -2.0]]]])
    gt = torch.full((1, 1, 2), 255)
    loss, parts = boundary_loss(logits, gt)
    assert parts["background"].item() == 0 and parts["foreground"].item() == 0
    assert loss.item() == pytest.approx((bce_to_one(0.3) + bce_to_one(-2.0)) / 2, rel=1e-6)


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(RetabError):
        boundary_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 5))


# 6 x 7 probability map: boundary (p >= 0.5) at the corner (0, 0), inside at (2, 3) where
# p is exactly the threshold, and at the opposite corner (5, 6); 0.49 at (4, 0) is not boundary.
PROB = np.full((6, 7), 0.1, np.float32)
PROB[0, 0], PROB[2, 3], PROB[5, 6], PROB[4, 0] = 0.9, 0.5, 0.7, 0.49

EXPECTED_KERNEL_0 = np.full((6, 7), 255, np.uint8)
EXPECTED_KERNEL_0[0, 0] = EXPECTED_KERNEL_0[2, 3] = EXPECTED_KERNEL_0[5, 6] = 0

# Each boundary pixel removes its 3 x 3 neighbourhood; with replicate padding the image border
# is not boundary, so border pixels away from boundaries stay target pixels.
EXPECTED_KERNEL_3 = np.array([
    [0, 0, 255, 255, 255, 255, 255],
    [0, 0, 0, 0, 0, 255, 255],
    [255, 255, 0, 0, 0, 255, 255],
    [255, 255, 0, 0, 0, 255, 255],
    [255, 255, 255, 255, 255, 0, 0],
    [255, 255, 255, 255, 255, 0, 0],
], dtype=np.uint8)


def test_target_map_without_erosion():
    out = boundary_target_map(PROB, threshold=0.5, kernel=0)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, EXPECTED_KERNEL_0)


def test_target_map_with_kernel_3_and_replicate_padding():
    np.testing.assert_array_equal(boundary_target_map(PROB, kernel=3), EXPECTED_KERNEL_3)
    np.testing.assert_array_equal(boundary_target_map(torch.from_numpy(PROB), kernel=3),
                                  EXPECTED_KERNEL_3)


def test_large_kernel_erodes_by_fraction_not_by_any_boundary_pixel():
    # With k = 11 one boundary pixel is 1/121 of the window: the average 120/121 >= 0.99 keeps
    # it, so an isolated boundary pixel disappears entirely (the published 0.99 test).
    prob = np.zeros((15, 15), np.float32)
    prob[7, 7] = 1.0
    np.testing.assert_array_equal(boundary_target_map(prob, kernel=11), np.full((15, 15), 255))
    # Two boundary pixels (119/121 < 0.99) remove every pixel whose window holds both.
    prob[7, 8] = 1.0
    out = boundary_target_map(prob, kernel=11)
    expected = np.full((15, 15), 255, np.uint8)
    expected[2:13, 3:13] = 0
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("kernel", [2, 4, -1, -3])
def test_even_or_negative_kernel_is_rejected(kernel):
    with pytest.raises(RetabError):
        boundary_target_map(PROB, kernel=kernel)


def test_target_map_rejects_non_2d_input():
    with pytest.raises(RetabError):
        boundary_target_map(np.zeros((1, 4, 4), np.float32))
