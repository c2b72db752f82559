"""Multi-scale CAM aggregation (SPEC 3): sizes, normalisation, flips, scales, class selection."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from retab.cam import aggregate_cams, multiscale_cam, multiscale_inputs, scaled_size
from retab.data.transforms import image_to_tensor
from retab.misc.errors import RetabError


def one_hot_labels(*classes):
    labels = np.zeros(20, dtype=np.float32)
    labels[list(classes)] = 1
    return labels


@pytest.mark.parametrize("width, height, scale, expected", [
    (375, 125, 0.5, (188, 62)),     # the two SPEC examples: halves go to the even integer
    (500, 333, 1.5, (750, 500)),    # 499.5 -> 500
    (281, 355, 0.5, (140, 178)),    # 140.5 -> 140, 177.5 -> 178
    (500, 375, 1.0, (500, 375)),
    (7, 5, 2.0, (14, 10)),
])
def test_scaled_size_uses_bankers_rounding(width, height, scale, expected):
    assert scaled_size(width, height, scale) == expected


def test_scaled_size_rejects_empty_result():
    with pytest.raises(RetabError):
        scaled_size(1, 1, 0.4)


def test_inputs_are_imagenet_normalised_chw():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 51)
    (tensor,) = multiscale_inputs(Image.fromarray(image), scales=(1.0,), flip=False)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, 2, 3)
    expected_pixel = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), expected_pixel, rtol=1e-6)
    np.testing.assert_allclose(tensor[:, 1, 2].numpy(), [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225],
                               rtol=1e-6)


def test_multiscale_inputs_order_sizes_and_flips():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = Image.fromarray(array)
    inputs = multiscale_inputs(img, scales=(1.0, 0.5), flip=True)
    assert [tuple(t.shape) for t in inputs] == [(3, 5, 7), (3, 5, 7), (3, 2, 4), (3, 2, 4)]
    np.testing.assert_array_equal(inputs[0].numpy(), image_to_tensor(array).numpy())
    resized = img.resize((4, 2), Image.BICUBIC)
    np.testing.assert_array_equal(inputs[2].numpy(), image_to_tensor(resized).numpy())
    for plain, mirrored in (inputs[0:2], inputs[2:4]):
        np.testing.assert_array_equal(mirrored.numpy(), plain.numpy()[:, :, ::-1])
    assert len(multiscale_inputs(img, scales=(1.0, 0.5), flip=False)) == 2


def test_flipped_pass_is_mirrored_back():
    ramp = torch.arange(6, dtype=torch.float32).repeat(4, 1)  # rises left to right
    cam = torch.zeros(20, 4, 6)
    cam[3] = ramp
    plain = aggregate_cams([cam], [False], (4, 6), one_hot_labels(3))
    mirrored = aggregate_cams([cam], [True], (4, 6), one_hot_labels(3))
    np.testing.assert_allclose(plain[3], ramp.numpy() / (5 + 1e-5), rtol=1e-6)
    np.testing.assert_allclose(mirrored[3], ramp.numpy()[:, ::-1] / (5 + 1e-5), rtol=1e-6)
    # A net that sees the mirrored image answers with the mirrored CAM: both passes then agree.
    both = aggregate_cams([cam, cam.flip(-1)], [False, True], (4, 6), one_hot_labels(3))
    np.testing.assert_allclose(both[3], 2 * ramp.numpy() / (10 + 1e-5), rtol=1e-6)


def test_passes_of_different_sizes_are_upsampled_to_the_original_size():
    small = torch.zeros(20, 1, 2)
    small[7] = torch.tensor([[0.0, 4.0]])
    large = torch.zeros(20, 2, 8)
    large[7] = 1.0
    out = aggregate_cams([small, large], [False, False], (2, 4), one_hot_labels(7))
    assert set(out) == {7} and out[7].shape == (2, 4) and out[7].dtype == np.float32
    # Bilinear, align_corners=False, 2 -> 4 columns: source x = (x + 0.5) / 2 - 0.5, clamped at 0
    # and 1, gives [0, 1, 3, 4]; the 8-column pass of ones shrinks to ones.
    expected = np.array([[0, 1, 3, 4], [0, 1, 3, 4]], dtype=np.float32) + 1
    np.testing.assert_allclose(out[7], expected / (5 + 1e-5), rtol=1e-6)


def test_absent_classes_are_dropped_and_maps_max_normalised():
    cam = torch.zeros(20, 3, 3)
    cam[0] = 100.0          # absent: must not leak into anything
    cam[5] = torch.arange(9, dtype=torch.float32).reshape(3, 3) * 0.25
    cam[11] = 0.5
    out = aggregate_cams([cam, cam], [False, False], (3, 3), one_hot_labels(5, 11))
    assert sorted(out) == [5, 11]
    peak5, peak11 = 2 * 8 * 0.25, 2 * 0.5
    assert out[5].max() == pytest.approx(peak5 / (peak5 + 1e-5), rel=1e-7)
    assert out[11].max() == pytest.approx(peak11 / (peak11 + 1e-5), rel=1e-7)
    np.testing.assert_allclose(out[5], 2 * cam[5].numpy() / (peak5 + 1e-5), rtol=1e-6)


def test_no_present_class_gives_empty_dict():
    assert aggregate_cams([torch.ones(20, 2, 2)], [False], (2, 2), np.zeros(20)) == {}


def redness_cam(batch):
    """A stand-in net: every class responds to the red channel, at output stride 8."""
    return F.avg_pool2d(batch[:, :1] + 3, 8).repeat(1, 20, 1, 1)


def test_multiscale_cam_matches_pass_by_pass_reference_and_keeps_orientation():
    array = np.zeros((48, 64, 3), dtype=np.uint8)
    array[:, :16] = (255, 0, 0)            # red strip on the left only
    img = Image.fromarray(array)
    labels = one_hot_labels(2, 14)
    batch_sizes = []

    def recording_cam(batch):
        batch_sizes.append(batch.shape[0])
        return redness_cam(batch)

    scales = (1.0, 0.5, 1.5, 2.0)
    out = multiscale_cam(recording_cam, img, labels, scales=scales, device="cpu")
    assert batch_sizes == [2, 2, 2, 2]
    passes = multiscale_inputs(img, scales)
    reference = aggregate_cams([redness_cam(x[None])[0] for x in passes],
                               [i % 2 == 1 for i in range(len(passes))], (48, 64), labels)
    assert sorted(out) == [2, 14]
    for k in out:
        np.testing.assert_allclose(out[k], reference[k], rtol=1e-5, atol=1e-6)
    # The response stays on the left, where the red strip is.
    assert out[2][:, :8].mean() > out[2][:, -16:].mean() + 0.2
    assert np.unravel_index(out[2].argmax(), out[2].shape)[1] < 16
