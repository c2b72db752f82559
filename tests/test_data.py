"""Augmentations and datasets (SPEC 3 and 4) on hand-made images, masks, CRF dicts and VOC trees."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import coded_image
from retab import voc
from retab.data import datasets, transforms as T
from retab.data.datasets import (
    AffinityTrainDataset,
    BoundaryTrainDataset,
    ClsTrainDataset,
    ImageDataset,
    base_label_grid,
    novel_label_grid,
)
from retab.misc.errors import RetabError
from retab.misc.fileio import save_gray_png, save_score_dict
from retab.voc import save_label_png

MEAN = np.asarray(T.IMAGENET_MEAN)
STD = np.asarray(T.IMAGENET_STD)
BLACK = ((0.0 - MEAN) / STD).astype(np.float32)  # a black pixel after normalisation


# ----------------------------------------------------------------------------- helpers

def denormalize(chw) -> np.ndarray:
    """float32 CHW (normalised) -> uint8-valued HxWx3 ints."""
    chw = np.asarray(chw)
    return np.rint((chw.transpose(1, 2, 0) * STD + MEAN) * 255).astype(int)


def padding_mask(chw) -> np.ndarray:
    """Pixels that are exactly a normalised black pixel (the boundary/affinity crop canvas)."""
    return np.all(np.asarray(chw).transpose(1, 2, 0) == BLACK, axis=-1)


def column_direction(chw) -> int:
    """+1 when decoded columns increase left to right on image pixels, -1 when they decrease."""
    cols = denormalize(chw)[..., 0] // 5
    pad = padding_mask(chw)
    row = np.flatnonzero((~pad).any(axis=1))[0]  # the first row holding image pixels
    steps = np.diff(cols[row][~pad[row]])
    assert np.all(steps == steps[0]) and abs(steps[0]) == 1
    return int(steps[0])


def write_image(root: Path, name: str, arr: np.ndarray) -> None:
    """Lossless: PNG bytes under the .jpg name (PIL decodes by content), so pixels stay exact."""
    path = voc.image_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


def write_xml(root: Path, name: str, classes) -> None:
    path = voc.xml_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(f"<object><name>{c}</name></object>" for c in classes)
    path.write_text(f"<annotation>{objs}</annotation>")


# ----------------------------------------------------------------------------- normalisation, rng

def test_normalize_image_formula_and_inputs():
    arr = np.array([[[255, 0, 128]]], np.uint8)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    out = T.normalize_image(arr)
    assert out.dtype == np.float32 and out.shape == (1, 1, 3)
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    img = coded_image(6, 9)
    np.testing.assert_array_equal(T.normalize_image(Image.fromarray(img)), T.normalize_image(img))
    tensor = T.image_to_tensor(Image.fromarray(img))
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, 6, 9)
    np.testing.assert_array_equal(tensor.numpy(), T.normalize_image(img).transpose(2, 0, 1))


def test_sample_rng_depends_on_seed_epoch_and_index():
    draw = lambda *key: T.sample_rng(*key).integers(0, 2**31, size=4).tolist()  # noqa: E731
    assert draw(3, 1, 7) == draw(3, 1, 7)
    others = [draw(4, 1, 7), draw(3, 2, 7), draw(3, 1, 8), draw(-3, 1, 7)]
    assert all(o != draw(3, 1, 7) for o in others)


# ----------------------------------------------------------------------------- crop

def test_crop_of_smaller_image_places_it_at_a_uniform_canvas_offset():
    arr = np.arange(1, 36, dtype=np.int32).reshape(5, 7)
    tops, lefts = set(), set()
    for seed in range(200):
        box = T.random_crop_box(np.random.default_rng(seed), 5, 7, 10)
        assert (box.src_top, box.src_left, box.height, box.width) == (0, 0, 5, 7)
        tops.add(box.dst_top)
        lefts.add(box.dst_left)
        out = T.apply_crop(arr, box, fill=-1)
        assert out.shape == (10, 10) and out.dtype == np.int32
        np.testing.assert_array_equal(out[box.dst_top:box.dst_top + 5, box.dst_left:box.dst_left + 7], arr)
        assert (out == -1).sum() == 100 - 35
    assert tops == set(range(6)) and lefts == set(range(4))  # 0 .. crop - side, both ends included


def test_crop_of_larger_image_takes_a_uniform_window():
    arr = np.random.default_rng(0).integers(0, 255, (13, 12, 2)).astype(np.uint8)
    tops, lefts = set(), set()
    for seed in range(200):
        box = T.random_crop_box(np.random.default_rng(seed), 13, 12, 10)
        assert (box.dst_top, box.dst_left, box.height, box.width) == (0, 0, 10, 10)
        tops.add(box.src_top)
        lefts.add(box.src_left)
        out = T.apply_crop(arr, box, fill=255)
        np.testing.assert_array_equal(out, arr[box.src_top:box.src_top + 10, box.src_left:box.src_left + 10])
    assert tops == set(range(4)) and lefts == set(range(3))


def test_crop_mixed_axes_equal_size_and_label_fill():
    box = T.random_crop_box(np.random.default_rng(1), 10, 4, 10)  # height equal, width smaller
    assert (box.src_top, box.dst_top, box.src_left) == (0, 0, 0)
    label = np.full((10, 4), 7, np.uint8)
    out = T.apply_crop(label, box, fill=255)
    assert (out == 7).sum() == 40 and (out == 255).sum() == 60
    assert np.all(out[:, box.dst_left:box.dst_left + 4] == 7)
    with pytest.raises(ValueError):
        T.apply_crop(np.zeros((9, 4)), box)


# ----------------------------------------------------------------------------- resize, jitter

def test_random_resize_long_range_and_aspect():
    landscape = Image.fromarray(coded_image(20, 30))
    portrait = Image.fromarray(coded_image(30, 20))
    seen = set()
    for seed in range(100):
        out = T.random_resize_long(landscape, np.random.default_rng(seed), 10, 14)
        long_side = out.size[0]
        seen.add(long_side)
        assert out.size == (long_side, round(20 * long_side / 30))
        out = T.random_resize_long(portrait, np.random.default_rng(seed), 10, 14)
        assert out.size == (round(20 * out.size[1] / 30), out.size[1]) and 10 <= out.size[1] <= 14
    assert seen == set(range(10, 15))


def test_color_jitter_shape_identity_and_determinism():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 17, 3)).astype(np.uint8))
    assert np.array_equal(np.asarray(T.NO_JITTER(img, np.random.default_rng(0))), np.asarray(img))
    a = T.DEFAULT_JITTER(img, np.random.default_rng(5))
    b = T.DEFAULT_JITTER(img, np.random.default_rng(5))
    assert a.size == img.size and a.mode == "RGB" and np.asarray(a).dtype == np.uint8
    assert np.array_equal(np.asarray(a), np.asarray(b))
    outs = {np.asarray(T.DEFAULT_JITTER(img, np.random.default_rng(s))).tobytes() for s in range(5)}
    assert len(outs) == 5


def test_brightness_jitter_scales_a_grey_image_within_its_range():
    grey = Image.fromarray(np.full((4, 4, 3), 100, np.uint8))
    values = set()
    for seed in range(50):
        out = np.asarray(T.ColorJitter(0.3, 0, 0, 0)(grey, np.random.default_rng(seed)))
        assert np.all(out == out[0, 0, 0])  # still one grey level
        assert 70 <= out[0, 0, 0] <= 130
        values.add(int(out[0, 0, 0]))
        # hue has no effect on grey
        assert np.array_equal(np.asarray(T.ColorJitter(0, 0, 0, 0.1)(grey, np.random.default_rng(seed))),
                              np.asarray(grey))
    assert len(values) > 10


def test_hue_shift_turns_pils_hue_channel_by_the_truncated_step():
    px = lambda rgb: Image.fromarray(np.array([[rgb]], np.uint8))
    rgb = lambda img: np.asarray(img)[0, 0].tolist()
    # PIL's 8-bit hue: red 0, green 85, blue 170; a third of a turn is int(85.0) = 85 steps
    assert rgb(T.adjust_hue(px([255, 0, 0]), 1 / 3)) == [0, 255, 0]
    assert rgb(T.adjust_hue(px([0, 255, 0]), 1 / 3)) == [0, 0, 255]
    # and back: -1/3 steps -85
    assert rgb(T.adjust_hue(px([0, 0, 255]), -1 / 3)) == [0, 255, 0]
    # int() truncates towards zero: -0.1 * 255 = -25.5 and -0.099 * 255 = -25.2 both step -25,
    # -0.1021 * 255 = -26.04 steps -26
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (8, 8, 3)).astype(np.uint8))
    same = lambda a, b: np.array_equal(np.asarray(a), np.asarray(b))
    assert same(T.adjust_hue(img, -0.1), T.adjust_hue(img, -0.099))
    assert not same(T.adjust_hue(img, -0.1), T.adjust_hue(img, -0.1021))
    assert same(T.adjust_hue(img, 0.0), img.convert("HSV").convert("RGB"))
    grey = Image.fromarray(np.full((2, 2), 90, np.uint8))
    assert T.adjust_hue(grey, 0.3) is grey


def test_color_jitter_matches_torchvisions_pil_operators():
    TF = pytest.importorskip("torchvision.transforms.functional")
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 11, 3)).astype(np.uint8))
    for ours, theirs, factors in ((T.adjust_brightness, TF.adjust_brightness, (0.7, 1.3)),
                                  (T.adjust_contrast, TF.adjust_contrast, (0.7, 1.3)),
                                  (T.adjust_saturation, TF.adjust_saturation, (0.7, 1.3)),
                                  (T.adjust_hue, TF.adjust_hue, (-0.1, -0.037, 0.05, 0.1))):
        for f in factors:
            assert np.array_equal(np.asarray(ours(img, f)), np.asarray(theirs(img, f))), (ours, f)


# ----------------------------------------------------------------------------- nearest rule

def test_nearest_indices_hand_cases_and_torch():
    np.testing.assert_array_equal(T.nearest_indices(10, 4), [0, 2, 5, 7])  # floor(0, 2.5, 5, 7.5)
    np.testing.assert_array_equal(T.nearest_indices(5, 3), [0, 1, 3])  # floor(0, 1.67, 3.33)
    np.testing.assert_array_equal(T.nearest_indices(448, 56), 8 * np.arange(56))
    for n_in, n_out in [(10, 4), (375, 47), (500, 63), (3, 7), (3, 6), (63, 63), (17, 5)]:
        src = torch.arange(n_in, dtype=torch.float32)[None, None, None, :]
        ref = torch.nn.functional.interpolate(src, size=(1, n_out), mode="nearest")[0, 0, 0]
        np.testing.assert_array_equal(T.nearest_indices(n_in, n_out), ref.numpy().astype(int))
    arr = np.arange(10 * 5).reshape(10, 5)
    np.testing.assert_array_equal(T.nearest_resize(arr, 4, 3), arr[[0, 2, 5, 7]][:, [0, 1, 3]])


def test_nearest_exact_indices_are_cell_centres_and_torch():
    # floor((i + 0.5) * in / out): the centre of each cell instead of its top-left pixel
    np.testing.assert_array_equal(T.nearest_indices(10, 4, "nearest-exact"), [1, 3, 6, 8])  # 1.25 3.75 6.25 8.75
    np.testing.assert_array_equal(T.nearest_indices(448, 56, "nearest-exact"), 8 * np.arange(56) + 4)
    np.testing.assert_array_equal(T.nearest_indices(7, 7, "nearest-exact"), np.arange(7))
    for n_in, n_out in [(10, 4), (375, 47), (500, 63), (3, 7), (3, 6), (63, 63), (17, 5), (13, 2)]:
        src = torch.arange(n_in, dtype=torch.float32)[None, None, None, :]
        ref = torch.nn.functional.interpolate(src, size=(1, n_out), mode="nearest-exact")[0, 0, 0]
        np.testing.assert_array_equal(T.nearest_indices(n_in, n_out, "nearest-exact"), ref.numpy().astype(int))
    arr = np.arange(10 * 5).reshape(10, 5)
    np.testing.assert_array_equal(T.nearest_resize(arr, 4, 3, "nearest-exact"), arr[[1, 3, 6, 8]][:, [0, 2, 4]])
    with pytest.raises(RetabError, match="grid sampling must be one of nearest, nearest-exact"):
        T.nearest_indices(10, 4, "bilinear")


# ----------------------------------------------------------------------------- the two pipelines

def test_classification_pipeline_pads_with_zero_after_normalisation():
    img = Image.fromarray(coded_image(20, 40))
    for seed in range(10):
        out = T.augment_for_classification(img, np.random.default_rng(seed), crop_size=48,
                                           resize_long_range=(32, 32))
        assert out.shape == (3, 48, 48) and out.dtype == np.float32
        placed = np.any(out != 0, axis=0)  # no RGB/255 value equals the mean exactly
        rows, cols = np.flatnonzero(placed.any(1)), np.flatnonzero(placed.any(0))
        assert (len(rows), len(cols)) == (16, 32) and placed.sum() == 16 * 32  # the resized 32 x 16
        assert rows[-1] - rows[0] == 15 and cols[-1] - cols[0] == 31
    big = T.augment_for_classification(img, np.random.default_rng(0), crop_size=16,
                                       resize_long_range=(40, 40))
    assert np.all(np.any(big != 0, axis=0))


def test_classification_pipeline_flips_the_image():
    img = Image.fromarray(coded_image(20, 40))
    directions = set()
    for seed in range(20):
        out = T.augment_for_classification(img, np.random.default_rng(seed), crop_size=40,
                                           resize_long_range=(40, 40), jitter=T.NO_JITTER)
        cols = denormalize(out)[..., 0] // 5
        image_rows = np.flatnonzero(np.any(out != 0, axis=(0, 2)))
        row = cols[image_rows[0]]
        assert np.array_equal(row, np.arange(40)) or np.array_equal(row, np.arange(40)[::-1])
        directions.add(int(row[1] - row[0]))
    assert directions == {1, -1}


def test_label_pipeline_pads_black_before_normalise_and_flips_jointly():
    h, w, crop = 30, 40, 36
    img = Image.fromarray(coded_image(h, w))
    mask = np.tile((np.arange(w) // 2).astype(np.uint8), (h, 1))  # label = column // 2
    directions = set()
    for seed in range(30):
        image, (mask_crop, mask_crop_255) = T.augment_with_labels(
            img, np.random.default_rng(seed), crop, [(mask, 0), (mask, 255)], jitter=T.NO_JITTER)
        assert image.shape == (3, crop, crop) and mask_crop.shape == (crop, crop)
        pad = padding_mask(image)
        assert pad.sum() == (crop - h) * crop  # whole rows: the height is padded, the width cropped
        assert np.all(mask_crop[pad] == 0) and np.all(mask_crop_255[pad] == 255)
        decoded = denormalize(image)
        cols, rows = decoded[..., 0] // 5, decoded[..., 1] // 5
        np.testing.assert_array_equal(mask_crop[~pad], cols[~pad] // 2)  # same flip, same crop
        image_rows = np.flatnonzero(~pad.any(axis=1))
        np.testing.assert_array_equal(rows[image_rows, 0], np.arange(h))  # vertical order kept
        directions.add(column_direction(image))
    assert directions == {1, -1}


# ----------------------------------------------------------------------------- label grids

def test_base_label_grid_is_pytorch_nearest():
    mask = np.random.default_rng(0).integers(0, 21, (16, 24)).astype(np.uint8)
    grid = base_label_grid(mask, (2, 3))
    assert grid.dtype == np.uint8
    np.testing.assert_array_equal(grid, mask[[0, 8]][:, [0, 8, 16]])
    grid = base_label_grid(mask, (2, 3), "nearest-exact")
    np.testing.assert_array_equal(grid, mask[[4, 12]][:, [4, 12, 20]])


def test_base_label_grid_sampling_moves_a_thin_edge_by_half_a_cell():
    # an object whose left edge is at column 4 of an 8-px cell: the top-left sample (column 0 of the
    # cell) still calls the cell background, the centre sample (column 4) calls it object
    mask = np.zeros((8, 24), np.uint8)
    mask[:, 12:] = 7
    assert base_label_grid(mask, (1, 3)).tolist() == [[0, 0, 7]]
    assert base_label_grid(mask, (1, 3), "nearest-exact").tolist() == [[0, 7, 7]]


def novel_cells():
    """2 x 3 cells of 8 x 8 pixels; keys 0 (background), 3 and 7."""
    la = {k: np.zeros((16, 24), np.float32) for k in (0, 3, 7)}
    ha = {k: np.zeros((16, 24), np.float32) for k in (0, 3, 7)}

    def cell(maps, r, c, **values):
        for key, v in values.items():
            maps[int(key[1:])][8 * r:8 * r + 8, 8 * c:8 * c + 8] = v

    # A (0,0): class 3 is 0.9 on 3/8 of the pixels, 0.05 elsewhere (mean 0.369) vs class 7 at 0.35:
    # the pooled argmax is 3 although most pixels prefer 7 -> pooling is a mean, label 3
    stripe = np.where(np.arange(8) < 3, 0.9, 0.05).astype(np.float32)[:, None] * np.ones((1, 8), np.float32)
    for maps in (la, ha):
        cell(maps, 0, 0, k0=0.1, k7=0.35)
        maps[3][0:8, 0:8] = stripe
    cell(la, 0, 1, k0=0.6, k7=0.4)  # B: la background -> 255 (ha says 7: stays 255)
    cell(ha, 0, 1, k0=0.3, k7=0.7)
    cell(la, 0, 2, k0=0.4, k7=0.6)  # C: la 7 but ha background -> 0
    cell(ha, 0, 2, k0=0.8, k7=0.2)
    cell(la, 1, 0, k0=0.9, k7=0.1)  # D: both background -> 0 (the ha rule comes after the la rule)
    cell(ha, 1, 0, k0=0.9, k7=0.1)
    cell(la, 1, 1, k7=5e-6)  # E: every score below 1e-5 -> 255 (crop padding), although ha says
    cell(ha, 1, 1, k0=5e-6)  # background: the padding rule comes after the ha rule
    for maps, fg in ((la, 0.8), (ha, 0.9)):  # F: left half padding, right half class 7 -> 7
        maps[7][8:16, 20:24] = fg
        maps[0][8:16, 20:24] = 1 - fg
    return la, ha


def test_novel_label_grid_rules():
    la, ha = novel_cells()
    np.testing.assert_array_equal(novel_label_grid(la, ha), [[3, 255, 0], [0, 255, 7]])


def test_novel_label_grid_boundary_masking_uses_nearest_samples():
    la, ha = novel_cells()
    target = np.full((16, 24), 255, np.uint8)
    target[3, 3] = 0  # inside A but not its sampled pixel: no effect
    target[8, 16] = 0  # F's sampled pixel (top-left of the cell) -> 255
    np.testing.assert_array_equal(novel_label_grid(la, ha, target), [[3, 255, 0], [0, 255, 255]])
    target = np.full((16, 24), 255, np.uint8)
    target[8, 0] = 0  # D's sampled pixel: its sure background becomes 255
    target[0, 0] = 0  # A's
    np.testing.assert_array_equal(novel_label_grid(la, ha, target), [[255, 255, 0], [255, 255, 7]])
    # nearest-exact samples each cell's centre (4, 4) instead: the top-left pixels no longer count
    np.testing.assert_array_equal(novel_label_grid(la, ha, target, sampling="nearest-exact"),
                                  [[3, 255, 0], [0, 255, 7]])
    target[12, 20] = 0  # F's centre
    np.testing.assert_array_equal(novel_label_grid(la, ha, target, sampling="nearest-exact"),
                                  [[3, 255, 0], [0, 255, 255]])


# ----------------------------------------------------------------------------- datasets on a tiny tree

@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "VOC2012"
    sizes = {"img_a": (32, 32), "img_b": (32, 32), "img_small": (16, 32)}
    for name, (h, w) in sizes.items():
        write_image(root, name, coded_image(h, w))
        mask = np.zeros((h, w), np.uint8)
        mask[:, w // 2:] = 12  # dog on the right half
        mask[:, w // 2 - 1] = 255  # an outline column
        save_label_png(voc.mask_path(root, name), mask)
        write_xml(root, name, ["dog"])
    write_image(root, "img_a_copy", coded_image(32, 32))
    write_xml(root, "img_a_copy", ["dog", "cat"])
    return root


def write_crf(tmp_path: Path, name: str, h: int, w: int, seed: int):
    """la / ha dicts with keys 0, 8 (cat) and 12 (dog), smooth-ish random scores."""
    rng = np.random.default_rng(seed)
    la, ha = {}, {}
    for k in (0, 8, 12):
        la[k] = np.kron(rng.random((h // 4, w // 4)), np.ones((4, 4))).astype(np.float32)
        ha[k] = np.kron(rng.random((h // 4, w // 4)), np.ones((4, 4))).astype(np.float32)
    save_score_dict(tmp_path / "la" / f"{name}.npy", la)
    save_score_dict(tmp_path / "ha" / f"{name}.npy", ha)
    target = np.where(rng.random((h, w)) < 0.2, 0, 255).astype(np.uint8)
    save_gray_png(tmp_path / "target" / f"{name}.png", target)
    return la, ha, target


def test_image_dataset(tree):
    labels = voc.ImageLabels(tree)
    ds = ImageDataset(["img_a", "img_a_copy"], tree, labels)
    name, img, vec = ds[1]
    assert name == "img_a_copy" and isinstance(img, Image.Image) and img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), coded_image(32, 32))
    assert vec.dtype == np.float32 and np.flatnonzero(vec).tolist() == [voc.CATEGORY_INDEX["cat"],
                                                                        voc.CATEGORY_INDEX["dog"]]
    assert ImageDataset(["img_a"], tree)[0][2] is None


def test_cls_dataset_is_deterministic_per_seed_epoch_and_index(tree):
    labels = voc.ImageLabels(tree)
    names = ["img_a", "img_a_copy"]  # the same pixels under two names: only the index differs
    ds = ClsTrainDataset(names, tree, labels, crop_size=24, resize_long=(20, 40), seed=7)
    image, vec = ds[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    np.testing.assert_array_equal(vec.numpy(), labels("img_a"))
    again = ClsTrainDataset(names, tree, labels, crop_size=24, resize_long=(20, 40), seed=7)
    assert torch.equal(again[0][0], image) and torch.equal(ds[0][0], image)
    assert not torch.equal(ds[1][0], image)
    assert not torch.equal(ClsTrainDataset(names, tree, labels, crop_size=24, seed=8)[0][0],
                           ClsTrainDataset(names, tree, labels, crop_size=24, seed=7)[0][0])
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], image)
    ds.set_epoch(0)
    assert torch.equal(ds[0][0], image)
    with pytest.raises(RetabError, match="img_missing"):
        ClsTrainDataset(["img_missing"], tree, labels)[0]


def test_dataloader_workers_repeat_the_same_samples(tree):
    labels = voc.ImageLabels(tree)
    ds = ClsTrainDataset(["img_a", "img_b", "img_small", "img_a_copy"], tree, labels,
                         crop_size=16, resize_long=(16, 32), seed=3)
    expected = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        expected.append(torch.stack([ds[i][0] for i in range(len(ds))]))
    assert not torch.equal(expected[0], expected[1])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    for epoch in range(2):
        ds.set_epoch(epoch)  # reaches the persistent workers through shared memory
        got = torch.cat([images for images, _ in loader])
        assert torch.equal(got, expected[epoch])


def test_boundary_dataset_joint_crop_and_mask_padding(tree):
    ds = BoundaryTrainDataset(["img_small", "img_a"], tree, crop_size=24, seed=0)
    for index in range(2):
        image, mask = ds[index]
        assert image.shape == (3, 24, 24) and mask.shape == (24, 24) and mask.dtype == torch.int64
    ds = BoundaryTrainDataset(["img_small"], tree, crop_size=24, seed=0, jitter=T.NO_JITTER)
    for seed in range(5):
        ds.seed = seed
        image, mask = ds[0]
        pad = padding_mask(image.numpy())
        assert pad.sum() == 8 * 24 and np.all(mask.numpy()[pad] == 0)
        cols = denormalize(image.numpy())[..., 0] // 5
        expected = np.where(cols < 15, 0, np.where(cols == 15, 255, 12))
        np.testing.assert_array_equal(mask.numpy()[~pad], expected[~pad])
    with pytest.raises(RetabError, match="SegmentationClassAug"):
        BoundaryTrainDataset(["img_a_copy"], tree)[0]


@pytest.mark.parametrize("sampling", ["nearest", "nearest-exact"])
def test_affinity_dataset_base_sample_grid(tree, tmp_path, sampling):
    ds = AffinityTrainDataset(["img_a"], tree, tmp_path / "la", tmp_path / "ha",
                              base_names={"img_a"}, crop_size=32, jitter=T.NO_JITTER, grid_sampling=sampling)
    mask = voc.load_label_png(voc.mask_path(tree, "img_a"))
    directions = set()
    for seed in range(12):
        ds.seed = seed
        image, grid = ds.sample_with_grid(0)
        direction = column_direction(image)  # the image is the crop size: only the flip varies
        directions.add(direction)
        expected = base_label_grid(mask if direction == 1 else T.hflip(mask), (4, 4), sampling)
        np.testing.assert_array_equal(grid, expected)
    assert directions == {1, -1}
    with pytest.raises(RetabError, match="grid sampling"):
        AffinityTrainDataset(["img_a"], tree, tmp_path / "la", tmp_path / "ha", grid_sampling="centre")


def test_affinity_dataset_base_padding_label(tree, tmp_path):
    for pad_label in (0, 255):
        ds = AffinityTrainDataset(["img_small"], tree, tmp_path / "la", tmp_path / "ha",
                                  base_names={"img_small"}, crop_size=32, base_pad_label=pad_label)
        for seed in range(6):
            ds.seed = seed
            image, grid = ds.sample_with_grid(0)
            sampled_pad_rows = padding_mask(image).all(axis=1)[::8]
            assert np.all(grid[sampled_pad_rows] == pad_label)
            assert np.all(np.isin(grid[~sampled_pad_rows], [0, 12, 255]))


@pytest.mark.parametrize("sampling", ["nearest", "nearest-exact"])
def test_affinity_dataset_novel_sample_grid_matches_the_pure_rules(tree, tmp_path, sampling):
    la, ha, target = write_crf(tmp_path, "img_b", 32, 32, seed=1)
    for boundary_target_dir in (None, tmp_path / "target"):
        ds = AffinityTrainDataset(["img_b"], tree, tmp_path / "la", tmp_path / "ha", boundary_target_dir=boundary_target_dir,
                                  crop_size=32, jitter=T.NO_JITTER, grid_sampling=sampling)
        directions = set()
        for seed in range(12):
            ds.seed = seed
            image, grid = ds.sample_with_grid(0)
            direction = column_direction(image)
            directions.add(direction)
            flip = (lambda a: a) if direction == 1 else T.hflip
            expected = novel_label_grid({k: flip(v) for k, v in la.items()},
                                        {k: flip(v) for k, v in ha.items()},
                                        None if boundary_target_dir is None else flip(target), sampling=sampling)
            np.testing.assert_array_equal(grid, expected)
        assert directions == {1, -1}
    assert (expected == 255).sum() > 0 and np.isin(expected, [0, 8, 12, 255]).all()


def test_affinity_dataset_novel_padding_cells_are_ignored(tree, tmp_path):
    write_crf(tmp_path, "img_small", 16, 32, seed=2)
    ds = AffinityTrainDataset(["img_small"], tree, tmp_path / "la", tmp_path / "ha",
                              boundary_target_dir=tmp_path / "target", crop_size=32)
    for seed in range(6):
        ds.seed = seed
        image, grid = ds.sample_with_grid(0)
        pad_rows = padding_mask(image).all(axis=1)
        fully_padded_cells = pad_rows.reshape(4, 8).all(axis=1)
        assert fully_padded_cells.sum() >= 1
        assert np.all(grid[fully_padded_cells] == 255)


def test_affinity_dataset_missing_inputs_name_the_file(tree, tmp_path):
    write_crf(tmp_path, "img_b", 32, 32, seed=1)
    kwargs = dict(crop_size=32)
    with pytest.raises(RetabError, match=r"la/img_a\.npy"):
        AffinityTrainDataset(["img_a"], tree, tmp_path / "la", tmp_path / "ha", **kwargs).sample_with_grid(0)
    with pytest.raises(RetabError, match=r"nowhere/img_b\.png"):
        AffinityTrainDataset(["img_b"], tree, tmp_path / "la", tmp_path / "ha",
                             boundary_target_dir=tmp_path / "nowhere", **kwargs).sample_with_grid(0)
    with pytest.raises(RetabError, match=r"SegmentationClassAug/img_a_copy\.png"):
        AffinityTrainDataset(["img_a_copy"], tree, tmp_path / "la", tmp_path / "ha",
                             base_names={"img_a_copy"}, **kwargs).sample_with_grid(0)
    save_score_dict(tmp_path / "la" / "img_a.npy", {3: np.ones((32, 32), np.float32)})
    save_score_dict(tmp_path / "ha" / "img_a.npy", {0: np.ones((32, 32), np.float32)})
    with pytest.raises(RetabError, match="background key 0"):
        AffinityTrainDataset(["img_a"], tree, tmp_path / "la", tmp_path / "ha", **kwargs).sample_with_grid(0)
    save_score_dict(tmp_path / "la" / "img_a.npy", {0: np.ones((30, 32), np.float32)})
    with pytest.raises(RetabError, match="shape"):
        AffinityTrainDataset(["img_a"], tree, tmp_path / "la", tmp_path / "ha", **kwargs).sample_with_grid(0)
    with pytest.raises(RetabError, match="multiple of 8"):
        AffinityTrainDataset(["img_a"], tree, tmp_path / "la", tmp_path / "ha", crop_size=30)


def test_affinity_dataset_item_is_the_pair_labels_of_its_grid(tree, tmp_path):
    affinity = pytest.importorskip("retab.affinity")
    write_crf(tmp_path, "img_b", 32, 32, seed=1)
    ds = AffinityTrainDataset(["img_b", "img_a"], tree, tmp_path / "la", tmp_path / "ha",
                              base_names={"img_a"}, boundary_target_dir=tmp_path / "target", crop_size=32)
    for index in range(2):
        image, pairs = ds[index]
        _, grid = ds.sample_with_grid(index)
        assert image.shape == (3, 32, 32)
        for got, want in zip(pairs, affinity.affinity_labels(grid, radius=5)):
            assert got.dtype == torch.float32
            np.testing.assert_array_equal(got.numpy(), want)


def place_at(monkeypatch, top: int, left: int, flip: bool) -> None:
    """Force the joint crop to put the picture at canvas (top, left) (it must fit) and the flip."""
    monkeypatch.setattr(T, "random_crop_box", lambda rng, h, w, size: T.CropBox(size, h, w, 0, 0, top, left, h, w))
    monkeypatch.setattr(T, "draw_flip", lambda rng, p=0.5: flip)


X = 255
# A 25 x 19 picture at canvas rows 2..26, columns 3..21 of a 32 crop (4 x 4 cells of 8 px), dog
# everywhere, no boundary in its target map: cells whose sampled pixel is padding are ignored.
# Not flipped: row cells 0 / 3 have padding at their top-left (row 0) / centre (row 28), column
# cells 0 / 3 at their top-left (column 0) / everywhere; flipped, the picture is at columns
# 10..28: column cell 0 is all padding, cell 1 has it at its top-left (8), cell 3 at neither.
PADDED_GRIDS = {
    # (sampling, flipped): expected grid
    ("nearest", False): [[X, X, X, X], [X, 12, 12, X], [X, 12, 12, X], [X, 12, 12, X]],
    ("nearest", True): [[X, X, X, X], [X, X, 12, 12], [X, X, 12, 12], [X, X, 12, 12]],
    ("nearest-exact", False): [[12, 12, 12, X], [12, 12, 12, X], [12, 12, 12, X], [X, X, X, X]],
    ("nearest-exact", True): [[X, 12, 12, 12], [X, 12, 12, 12], [X, 12, 12, 12], [X, X, X, X]],
    # without a target map only the cells entirely in the padding are ignored (no-score rule)
    (None, False): [[12, 12, 12, X]] * 4,
    (None, True): [[X, 12, 12, 12]] * 4,
}


@pytest.mark.parametrize("sampling, flip", list(PADDED_GRIDS))
def test_affinity_dataset_target_padding_is_boundary_as_published(tmp_path, monkeypatch, sampling, flip):
    """The published mask is made before the crop: the crop's zero canvas makes the padding boundary,
    so a cell partly picture whose sampled pixel (top-left, or centre for nearest-exact) is padding
    is ignored, which the no-score rule alone would label."""
    root = tmp_path / "VOC2012"
    write_image(root, "pic", coded_image(25, 19))
    save_score_dict(tmp_path / "la" / "pic.npy", {0: np.full((25, 19), 0.2, np.float32),
                                                  12: np.full((25, 19), 0.8, np.float32)})
    save_score_dict(tmp_path / "ha" / "pic.npy", {0: np.full((25, 19), 0.1, np.float32),
                                                  12: np.full((25, 19), 0.9, np.float32)})
    save_gray_png(tmp_path / "target" / "pic.png", np.full((25, 19), 255, np.uint8))
    place_at(monkeypatch, top=2, left=3, flip=flip)
    ds = AffinityTrainDataset(["pic"], root, tmp_path / "la", tmp_path / "ha", crop_size=32, jitter=T.NO_JITTER,
                              boundary_target_dir=None if sampling is None else tmp_path / "target",
                              grid_sampling=sampling or "nearest")
    image, grid = ds.sample_with_grid(0)
    picture = np.zeros((32, 32), bool)
    picture[2:27, 3:22] = True
    np.testing.assert_array_equal(~padding_mask(image), T.hflip(picture) if flip else picture)
    np.testing.assert_array_equal(grid, PADDED_GRIDS[sampling, flip])


def test_affinity_dataset_target_canvas_changes_no_unpadded_or_base_item(tree, tmp_path, monkeypatch):
    """Crops without padding, and base samples, are the same whatever the target map's canvas."""
    write_crf(tmp_path, "img_a", 32, 32, seed=4)
    write_crf(tmp_path, "img_small", 16, 32, seed=5)
    grids = {}
    for canvas in (0, 255):
        monkeypatch.setattr(datasets, "TARGET_PAD", canvas)
        ds = AffinityTrainDataset(["img_a", "img_small"], tree, tmp_path / "la", tmp_path / "ha",
                                  base_names={"img_small"}, boundary_target_dir=tmp_path / "target", crop_size=24)
        for seed in range(4):
            ds.seed = seed
            grids[canvas, seed] = [ds.sample_with_grid(i)[1] for i in range(2)]
    for seed in range(4):
        for index in range(2):
            np.testing.assert_array_equal(grids[0, seed][index], grids[255, seed][index])
