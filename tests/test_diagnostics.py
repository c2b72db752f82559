"""retab.diagnostics: the stride-8 ceiling, the walk with a perfect affinity, pair agreement and AUC."""
import numpy as np
import pytest
import torch

from retab import diagnostics
from retab.diagnostics import _fill_ignored


def test_fill_ignored_takes_a_neighbours_label_and_zero_when_nothing_is_labelled():
    np.testing.assert_array_equal(_fill_ignored(np.array([[1, 255, 255, 2]])), [[1, 1, 2, 2]])
    np.testing.assert_array_equal(_fill_ignored(np.full((2, 3), 255)), np.zeros((2, 3)))


def test_grid_ceiling_keeps_cell_aligned_stripes_and_loses_a_thin_line():
    gt = np.zeros((40, 48), np.uint8)
    gt[:, 8:24] = 3  # two cells wide, on cell edges
    gt[:, 32:40] = 7
    np.testing.assert_array_equal(diagnostics.grid_ceiling_labels(gt), gt)
    thin = np.zeros((40, 48), np.uint8)
    thin[:, 20:22] = 5  # 2 px: a quarter of a cell
    thin[:, 19] = 255  # with its band
    assert 5 not in diagnostics.grid_ceiling_labels(thin)


def test_perfect_affinity_fills_a_hole_of_the_cam_and_stays_inside_the_object():
    size = 96  # a 12 x 12 grid: the walk's radius-5 pairs reach every cell but those of the top row
    gt = np.zeros((size, size), np.uint8)
    gt[:, :48] = 3  # object (class index 2) on the left half, background on the right
    cam = np.zeros((size, size), np.float32)
    cam[:, :16] = 0.9
    cam[:, 32:48] = 0.9  # a hole at x 16..31 inside the object
    cam[:, 48:56] = 0.3  # a weak spill into the background
    labels = diagnostics.perfect_affinity_labels({2: cam}, gt, alpha=4)
    below_top_row = slice(12, size)  # pixels not blended (upsampling) with the unreached top row
    plain = np.where(cam > (1 - cam) ** 4, 3, 0)  # the CAM alone, same background score
    assert (plain[below_top_row, 16:32] == 0).all()
    assert (labels[below_top_row, 16:32] == 3).all()  # the hole is filled from the rest of the object
    assert (labels[:, 48:] == 0).all()  # nothing crosses into the background


def test_pair_agreement_of_perfect_features_ranks_every_same_label_pair_first():
    gt = np.zeros((96, 96), np.uint8)
    gt[20:70, 10:60] = 12
    gt[0:8, :] = 255  # the top row of cells is ignored
    features = diagnostics.perfect_affinity_features(np.where(gt == 255, 0, gt))
    aff, same, label_from, label_to = diagnostics.pair_label_agreement(features, gt)
    assert len(aff) > 0 and same.any() and (~same).any()
    assert not np.isin(255, label_from) and not np.isin(255, label_to)
    np.testing.assert_array_equal(same, label_from == label_to)
    np.testing.assert_allclose(aff[same], 1.0)
    assert aff[~same].max() < 1e-3
    assert diagnostics.auc(aff[same], aff[~same]) == 1.0


@pytest.mark.parametrize("positive, negative, expected", [
    ([1, 2], [0], 1.0), ([0], [1], 0.0), ([1], [1], 0.5), ([1, 3], [2, 0], 0.75), ([2, 2], [2, 1], 0.75)])
def test_auc_hand_cases(positive, negative, expected):
    assert diagnostics.auc(np.array(positive), np.array(negative)) == pytest.approx(expected)


def test_auc_of_nothing_is_nan():
    assert np.isnan(diagnostics.auc(np.zeros(0), np.ones(3)))


def test_perfect_features_are_on_the_grid():
    features = diagnostics.perfect_affinity_features(np.zeros((50, 70), np.uint8))
    assert isinstance(features, torch.Tensor) and tuple(features.shape) == (21, 7, 9)


def test_label_grid_counts_by_hand():
    grid = np.array([[0, 0, 3, 3],
                     [255, 3, 3, 0],
                     [0, 5, 255, 0]])
    gt = np.array([[0, 3, 3, 255],
                   [0, 3, 0, 0],
                   [0, 3, 5, 0]])
    # known cells: all but (0, 3). fg-labelled known: (0,2) right, (1,1) right, (1,2) wrong, (2,1) wrong
    # (5 on GT 3). bg-labelled known: (0,0) right, (0,1) wrong, (1,3) right, (2,0) right, (2,3) right.
    assert diagnostics.label_grid_counts(grid, gt) == {"fg_cells": 4, "fg_right": 2, "bg_cells": 5,
                                                       "bg_right": 4, "gt_fg_cells": 5}
    with pytest.raises(ValueError, match="differ"):
        diagnostics.label_grid_counts(grid, gt[:2])


def test_cell_majority_labels_by_hand():
    gt = np.zeros((16, 8), np.uint8)
    gt[:5, :] = 3          # top cell: 40 px of 3, 20 px of 0 ...
    gt[5, :4] = 255        # ... and 4 ignored
    gt[8:, :] = 255        # bottom cell: nothing but the band
    gt[8, 0] = 7
    assert diagnostics.cell_majority_labels(gt).tolist() == [[3], [7]]
    gt[8, 0] = 255
    assert diagnostics.cell_majority_labels(gt).tolist() == [[3], [255]]
    tie = np.zeros((8, 8), np.uint8)
    tie[:4] = 9            # 32 px each: the smaller label wins
    assert diagnostics.cell_majority_labels(tie).tolist() == [[0]]
    assert diagnostics.cell_majority_labels(np.zeros((15, 23), np.uint8)).shape == (1, 2)


def test_pair_label_accuracy_by_hand():
    # radius 2: offsets (0, 1), (1, -1), (1, 0), (1, 1); p runs over row 0, columns 1 and 2
    reference = np.array([[0, 0, 5, 5],
                          [0, 0, 5, 5]], np.uint8)
    grid = np.array([[0, 0, 5, 5],
                     [0, 5, 5, 255]], np.uint8)
    # from (0,1): ->(0,2) neg/neg right, ->(1,0) bg/bg right, ->(1,1) neg but reference bg,
    #             ->(1,2) neg/neg right
    # from (0,2): ->(0,3) fg/fg right, ->(1,1) fg but reference neg, ->(1,2) fg/fg right,
    #             ->(1,3) unlabelled (255)
    assert diagnostics.pair_label_accuracy(grid, reference, radius=2) == {
        "bg_pos": 1, "bg_pos_right": 1, "fg_pos": 3, "fg_pos_right": 2, "neg": 3, "neg_right": 2,
        "labelled": 7, "reference": 8}
    with pytest.raises(ValueError, match="differ"):
        diagnostics.pair_label_accuracy(grid, reference[:1], radius=2)
    # the same pairs counted without a reference
    assert diagnostics.taught_pairs(grid, radius=2) == {"bg_pos": 1, "fg_pos": 3, "neg": 3}
    assert diagnostics.taught_pairs(reference, radius=2) == {"bg_pos": 2, "fg_pos": 3, "neg": 3}


def test_boundary_flag_counts_by_hand():
    """A 4 x 4 object (label 3) at rows/cols 4..7 of a 12 x 12 picture; the target map flags the
    object's top row and one pixel at its centre."""
    gt = np.zeros((12, 12), np.uint8)
    gt[4:8, 4:8] = 3
    target = np.full((12, 12), 255, np.uint8)
    target[4, 4:8] = 0
    target[5, 5] = 0
    target[0, 0] = 0  # far from the object: counted nowhere
    counts = diagnostics.boundary_flag_counts(gt, target, outline_radius=1, interior_radius=1)
    # outline (radius 1): the object's 12 edge pixels and the 16 + 4 pixels around it; interior: 2 x 2
    assert counts == {3: {"outline": 32, "outline_flagged": 4, "interior": 4, "interior_flagged": 1}}
    assert diagnostics.boundary_flag_counts(np.zeros((5, 5), np.uint8), target[:5, :5]) == {}


def test_label_change_counts_by_hand():
    """One row of ten pixels: GT object 2 on 2..5 (pixel 6 ignored); before, the object on 4..8 (a
    hole at 2..3, a leak at 7..8, an ignored pixel at 6); after, the object on 2..4 and 8, class 5
    on 9 (a wrong class added where the GT is background)."""
    gt = np.array([[0, 0, 2, 2, 2, 2, 255, 0, 0, 0]], np.uint8)
    before = np.array([[0, 0, 0, 0, 2, 2, 2, 2, 2, 0]], np.uint8)
    after = np.array([[0, 0, 2, 2, 2, 0, 0, 0, 2, 5]], np.uint8)
    assert diagnostics.label_change_counts(gt, before, after) == {
        2: {"gt": 4, "filled": 2, "lost": 1, "leak_removed": 1, "leak_added": 0},
        5: {"gt": 0, "filled": 0, "lost": 0, "leak_removed": 0, "leak_added": 1}}
    # nothing changed: only the GT count remains
    assert diagnostics.label_change_counts(gt, before, before)[2] == {
        "gt": 4, "filled": 0, "lost": 0, "leak_removed": 0, "leak_added": 0}
    with pytest.raises(ValueError, match="shapes differ"):
        diagnostics.label_change_counts(gt, before[:, :5], after)
