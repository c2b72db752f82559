"""Dense CRF (SPEC 3, "CRF labels"): marginals, edge sharpening, the la / ha background."""
import numpy as np
import pytest

import retab.crf as crf
from retab.crf import crf_label_dict, crf_label_dicts, dense_crf
from retab.misc.errors import RetabError


def test_marginals_have_the_input_shape_and_sum_to_one():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    logits = rng.normal(size=(3, 20, 30))
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    img.flags.writeable = False   # as np.asarray(PIL image) gives; inputs are never modified
    q = dense_crf(img, probs)
    assert q.shape == (3, 20, 30) and q.dtype == np.float32
    assert (q >= 0).all()
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(RetabError):
        dense_crf(np.zeros((4, 5, 3), np.uint8), np.ones((2, 5, 4), np.float32))


@pytest.mark.parametrize("blur_centre, blur_width", [(34, 4), (26, 4), (36, 6)])
def test_crf_moves_a_blurred_transition_onto_the_image_edge(blur_centre, blur_width):
    height, width, edge = 40, 60, 30
    rng = np.random.default_rng(2)
    img = np.zeros((height, width, 3), np.float32)
    img[:, :edge] = (200, 40, 40)
    img[:, edge:] = (40, 40, 200)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    columns = np.arange(width)
    foreground = 1 / (1 + np.exp(-(columns - blur_centre + 0.5) / blur_width))
    foreground = np.tile(foreground, (height, 1)).astype(np.float32)
    probs = np.stack([1 - foreground, foreground])
    truth = np.tile(columns >= edge, (height, 1))

    q = dense_crf(img, probs)

    wrong_before = ((probs.argmax(0) == 1) != truth).sum()
    wrong_after = ((q.argmax(0) == 1) != truth).sum()
    assert wrong_after < wrong_before
    # The label changes exactly once per row, between columns edge-1 and edge.
    labels = q.argmax(0)
    assert (labels[:, :edge] == 0).all() and (labels[:, edge:] == 1).all()
    soft_error_before = np.abs(probs[1] - truth).mean()
    soft_error_after = np.abs(q[1] - truth).mean()
    assert soft_error_after < soft_error_before


def test_crf_label_dict_builds_background_and_keys(monkeypatch):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cam_dict = {7: rng.random((6, 8)).astype(np.float32), 2: rng.random((6, 8)).astype(np.float32)}
    seen = {}

    def fake_crf(image, probs, iterations=10):
        seen["probs"] = probs
        return probs * 2  # distinguishable stand-in for the marginals

    monkeypatch.setattr(crf, "dense_crf", fake_crf)
    for alpha in (4, 32):
        out = crf_label_dict(img, cam_dict, alpha)
        assert sorted(out) == [0, 3, 8]
        background = (1 - np.maximum(cam_dict[2], cam_dict[7])) ** alpha
        np.testing.assert_allclose(seen["probs"][0], background, rtol=1e-6)
        np.testing.assert_array_equal(seen["probs"][1], cam_dict[2])
        np.testing.assert_array_equal(seen["probs"][2], cam_dict[7])
        np.testing.assert_allclose(out[0], 2 * background, rtol=1e-6)
        np.testing.assert_array_equal(out[3], 2 * cam_dict[2])
        np.testing.assert_array_equal(out[8], 2 * cam_dict[7])


def test_high_alpha_background_is_weaker_where_objects_are_weak():
    img = np.full((12, 16, 3), 120, np.uint8)
    weak = np.full((12, 16), 0.3, np.float32)
    weak[:, :4] = 0.05          # almost no object response on the left
    both = crf_label_dicts(img, {14: weak})
    assert sorted(both) == [4, 32]
    low, high = both[4], both[32]
    assert sorted(low) == sorted(high) == [0, 15]
    assert (high[0][:, 6:] < low[0][:, 6:]).all()
    # With (1 - 0.3)**4 = 0.24 against 0.3 the la map already prefers the object; with
    # (1 - 0.3)**32 ~ 1e-5 the ha background has all but vanished.
    assert high[0][:, 6:].max() < 0.01
    for maps in (low, high):
        np.testing.assert_allclose(maps[0] + maps[15], 1.0, atol=1e-5)
