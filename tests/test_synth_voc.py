"""The synthetic mini-VOC generator: a valid VOC tree, VOC's outline band, determinism, reruns."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retab import voc
from retab.cli import run_stage
from retab.misc import steps
from retab.misc.errors import RetabError
from retab.stages import synth_voc
from retab.synth import catalog, scene
from retab.synth.textures import value_noise

SEED = 0
SCALE = "tiny"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "VOC2012"
    synth_voc.generate(out, seed=SEED, scale=SCALE)
    return out


@pytest.fixture(scope="module")
def plan():
    return synth_voc.plan_dataset(SEED, SCALE)


def _names(root, folder, suffix):
    return sorted(p.name[: -len(suffix)] for p in (root / folder).iterdir() if p.name.endswith(suffix))


def _xml_objects(root, name):
    ann = ET.parse(voc.xml_path(root, name)).getroot()
    size = (int(ann.findtext("size/height")), int(ann.findtext("size/width")))
    objects = [(o.findtext("name"), tuple(int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")))
               for o in ann.iter("object")]
    return size, objects


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def reference_band(instances: np.ndarray, radius: int = 2) -> np.ndarray:
    """Straightforward: a pixel is in the band when a pixel at most `radius` away (Chebyshev) differs."""
    h, w = instances.shape
    band = np.zeros((h, w), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            # compare pixel (y, x) with pixel (y + dy, x + dx) wherever both are inside the image
            ys, yd = slice(max(-dy, 0), h - max(dy, 0)), slice(max(dy, 0), h - max(-dy, 0))
            xs, xd = slice(max(-dx, 0), w - max(dx, 0)), slice(max(dx, 0), w - max(-dx, 0))
            band[ys, xs] |= instances[ys, xs] != instances[yd, xd]
    return band


# ----------------------------------------------------------------------------- the tree

def test_tree_has_every_file_of_every_listed_image(root, plan):
    sizes = synth_voc.SCALES[SCALE]
    lists = root / "ImageSets" / "Segmentation"
    train = voc.read_name_list(lists / "train.txt")
    val = voc.read_name_list(lists / "val.txt")
    trainval = voc.read_name_list(lists / "trainval.txt")
    assert (len(train), len(val)) == (sizes.train, sizes.val)
    assert not set(train) & set(val)
    assert trainval == sorted(train + val)
    everything = sorted(item.name for item in plan)
    assert len(everything) == sizes.total == len(set(everything))
    assert all(re.fullmatch(r"20(0[7-9]|1[0-2])_\d{6}", n) for n in everything)
    assert _names(root, "JPEGImages", ".jpg") == everything
    assert _names(root, "Annotations", ".xml") == everything
    assert _names(root, "SegmentationClassAug", ".png") == everything
    assert _names(root, "SegmentationClass", ".png") == trainval
    assert _names(root, "SegmentationObject", ".png") == trainval
    # train_aug as make_splits derives it: all Aug masks minus val
    assert len(set(everything) - set(val)) == sizes.train + sizes.sbd


def test_masks_match_images_and_annotations(root, plan):
    for item in plan:
        with Image.open(voc.image_path(root, item.name)) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            width, height = img.size
        assert 128 <= width <= 200 and 128 <= height <= 200
        size, objects = _xml_objects(root, item.name)
        assert size == (height, width)
        xml_classes = {name for name, _ in objects}
        masks = [voc.mask_path(root, item.name, aug=True)] + ([voc.mask_path(root, item.name, aug=False)] if item.banded else [])
        for path in masks:
            with Image.open(path) as m:
                assert m.mode == "P"
            mask = voc.load_label_png(path)
            assert mask.shape == (height, width)
            values = set(np.unique(mask).tolist())
            assert values <= set(range(21)) | {255}
            assert {voc.LABEL_NAMES[v] for v in values - {0, 255}} == xml_classes
        assert item.first_class in {voc.CATEGORIES.index(n) + 1 for n in xml_classes}


def test_object_masks_agree_with_xml_objects(root, plan):
    """SegmentationObject value k is the k-th <object>: its pixels carry that class, inside its box."""
    for item in (i for i in plan if i.banded):
        _, objects = _xml_objects(root, item.name)
        instances = voc.load_label_png(root / "SegmentationObject" / f"{item.name}.png")
        labels = voc.load_label_png(voc.mask_path(root, item.name, aug=False))
        assert np.array_equal(instances == 255, labels == 255)
        assert set(np.unique(instances).tolist()) - {255} == set(range(len(objects) + 1))
        for k, (name, (xmin, ymin, xmax, ymax)) in enumerate(objects, start=1):
            ys, xs = np.nonzero(instances == k)
            assert set(labels[ys, xs].tolist()) == {voc.CATEGORIES.index(name) + 1}
            assert xmin <= xs.min() + 1 and xs.max() + 1 <= xmax and ymin <= ys.min() + 1 and ys.max() + 1 <= ymax


def test_band_only_along_outlines_and_only_in_voc_masks(root, plan):
    """Re-render each image: trainval masks are the band-free mask plus 255 exactly on the
    reference band of the instance outlines; SBD masks are the band-free mask itself."""
    for item in plan:
        sample = scene.render_sample(SEED, item.index, item.first_class)
        clean = sample.class_mask()
        aug = voc.load_label_png(voc.mask_path(root, item.name, aug=True))
        if item.banded:
            band = reference_band(sample.instances, radius=scene.band_window(*clean.shape) // 2)
            assert band.any()
            assert np.array_equal(aug, np.where(band, 255, clean))
            assert np.array_equal(aug, voc.load_label_png(voc.mask_path(root, item.name, aug=False)))
        else:
            assert np.array_equal(aug, clean)
            assert 255 not in aug


def test_summary_counts_match_the_masks(root, plan):
    summary = synth_voc.read_marker(root)["summary"]
    train_aug = [item for item in plan if item.split != "val"]
    assert summary["train_aug"] == len(train_aug)
    for fold in range(voc.NUM_FOLDS):
        novel = sum(voc.is_novel_mask(voc.load_label_png(voc.mask_path(root, i.name)), fold) for i in train_aug)
        assert summary["folds"][str(fold)] == {"base": len(train_aug) - novel, "novel": novel}
    for split in ("train", "val"):  # every class is in train and in val
        assert all(count > 0 for count in summary["objects"][split].values())


def test_plan_cycles_first_classes_through_every_split():
    for scale, sizes in synth_voc.SCALES.items():
        plan = synth_voc.plan_dataset(3, scale)
        assert plan == synth_voc.plan_dataset(3, scale)
        names = [item.name for item in plan]
        assert names == sorted(names) and len(set(names)) == sizes.total
        for split, count in (("train", sizes.train), ("val", sizes.val), ("sbd", sizes.sbd)):
            firsts = [item.first_class for item in plan if item.split == split]
            assert len(firsts) == count
            assert set(firsts) == set(range(1, 21))
            assert max(np.bincount(firsts)) - min(np.bincount(firsts)[1:]) <= 1  # balanced rounds


# ----------------------------------------------------------------------------- determinism, reruns

def test_same_seed_gives_identical_bytes_other_seed_differs(root, tmp_path):
    synth_voc.generate(tmp_path / "again", seed=SEED, scale=SCALE)
    assert _files(tmp_path / "again") == _files(root)
    synth_voc.generate(tmp_path / "other", seed=SEED + 1, scale=SCALE)
    other = _files(tmp_path / "other")
    first = _files(root)
    jpegs = [k for k in first if k.endswith(".jpg")]
    differing = [k for k in jpegs if other.get(k) != first[k]]
    assert len(differing) == len(jpegs)


def test_rerun_with_marker_skips(root, caplog):
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    with caplog.at_level("INFO", logger="retab"):
        summary = synth_voc.generate(root, seed=SEED, scale=SCALE)
    assert "skipping" in caplog.text
    assert summary == synth_voc.read_marker(root)["summary"]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    # under a driver the step says so and keeps the time of the run that made the dataset
    timings = root.parent / "timings.tsv"
    timings.write_text("synth_voc\t8.50\n")
    env = {steps.STEP_VAR: "synth_voc", steps.TIMINGS_VAR: str(timings)}
    assert steps.run_step("synth_voc", [], lambda: synth_voc.main(["--out", str(root), "--seed", str(SEED),
                                                                   "--scale", SCALE]), env) == 0
    assert timings.read_text() == "synth_voc\t8.50\n"


def test_existing_foreign_dir_is_an_error_unless_overwrite(root, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RetabError, match=str(foreign)):
        synth_voc.generate(foreign, seed=SEED, scale=SCALE)
    assert run_stage("synth_voc", ["--out", str(foreign), "--scale", SCALE]) == 2
    assert "mine" in capsys.readouterr().err
    # a dataset made with other parameters is foreign too
    with pytest.raises(RetabError):
        synth_voc.generate(root, seed=SEED + 5, scale=SCALE)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert run_stage("synth_voc", ["--out", str(foreign), "--scale", SCALE, "--overwrite"]) == 0
    assert not (foreign / "notes.txt").exists()
    assert _files(foreign) == _files(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary siblings left


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_render(seed, index, first_class, side):
        calls.append(index)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return scene.render_sample(seed, index, first_class, side)

    monkeypatch.setattr(synth_voc, "render_sample", failing_render)
    with pytest.raises(KeyboardInterrupt):
        synth_voc.generate(tmp_path / "VOC2012", seed=SEED, scale=SCALE)
    assert list(tmp_path.iterdir()) == []


def test_negative_seed_is_rejected(tmp_path):
    with pytest.raises(RetabError, match="seed"):
        synth_voc.generate(tmp_path / "x", seed=-1, scale=SCALE)


def test_image_side_sets_picture_sizes_and_is_part_of_the_identity(tmp_path):
    """--image_side: every picture's sides lie in the range; the marker records it, so a rerun
    with the same range skips and one with another range (or the default) refuses to overwrite."""
    out = tmp_path / "VOC2012"
    synth_voc.generate(out, seed=SEED, scale=SCALE, image_side=(150, 160))
    sizes = {Image.open(p).size for p in (out / "JPEGImages").iterdir()}
    assert all(150 <= w <= 160 and 150 <= h <= 160 for w, h in sizes) and len(sizes) > 3
    assert synth_voc.read_marker(out)["image_side"] == [150, 160]
    stamp = (out / synth_voc.MARKER).stat().st_mtime_ns
    synth_voc.generate(out, seed=SEED, scale=SCALE, image_side=(150, 160))  # skipped
    assert (out / synth_voc.MARKER).stat().st_mtime_ns == stamp
    for other in [(150, 170), scene.IMAGE_SIDE]:
        with pytest.raises(RetabError, match="image sides"):
            synth_voc.generate(out, seed=SEED, scale=SCALE, image_side=other)
    with pytest.raises(RetabError, match="image_side"):
        synth_voc.generate(tmp_path / "y", seed=SEED, scale=SCALE, image_side=(300, 200))


# ----------------------------------------------------------------------------- building blocks

def test_outline_band_hand_cases():
    inst = np.zeros((9, 9), np.uint8)
    inst[4, 4] = 1  # one pixel: the band is the 5 x 5 square around it
    expected = np.zeros((9, 9), bool)
    expected[2:7, 2:7] = True
    assert np.array_equal(scene.outline_band(inst, 5), expected)
    inst[:] = 0
    inst[0, 0] = 2  # at the corner the window is clipped by the image, not padded with a value
    expected[:] = False
    expected[0:3, 0:3] = True
    assert np.array_equal(scene.outline_band(inst, 5), expected)
    assert not scene.outline_band(np.full((6, 7), 3, np.uint8)).any()
    inst[:] = 0
    inst[4, 4] = 1  # a small map takes the smallest band: 3 x 3
    expected[:] = False
    expected[3:6, 3:6] = True
    assert np.array_equal(scene.outline_band(inst), expected)


def test_band_window_scales_with_the_picture():
    assert scene.band_window(375, 500) == 5  # VOC: 2 px on each side of an outline
    assert scene.band_window(128, 128) == scene.band_window(200, 200) == 3  # the mini-VOC default
    assert scene.band_window(256, 256) == 3 and scene.band_window(400, 400) == 5
    assert scene.band_window(20, 20) == 3 and scene.band_window(1000, 1000) == 11


def test_outline_band_matches_reference_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(5):
        inst = (rng.random((3, 4)) * 3).astype(np.uint8).repeat(7, 0).repeat(6, 1)
        assert np.array_equal(scene.outline_band(inst, 5), reference_band(inst))


def test_pose_round_trip():
    pose = scene.Pose(cx=50.5, cy=40.0, scale=80.0, angle=0.7, aspect=1.3, flip=-1.0)
    pts = np.random.default_rng(1).uniform(-0.5, 0.5, (20, 2))
    img = pose.to_image(pts)
    u, v = pose.to_object(img[:, 0], img[:, 1])
    np.testing.assert_allclose(np.stack([u, v], 1), pts, atol=1e-9)


def test_value_noise_interpolates_grid_and_is_periodic():
    grid = np.random.default_rng(2).random((16, 16), dtype=np.float32)
    ys, xs = np.mgrid[0:16, 0:16].astype(np.float32)
    np.testing.assert_allclose(value_noise(grid, xs, ys), grid, atol=1e-6)  # at cell corners
    x = np.random.default_rng(3).uniform(-20, 20, 100).astype(np.float32)
    y = np.random.default_rng(4).uniform(-20, 20, 100).astype(np.float32)
    np.testing.assert_allclose(value_noise(grid, x + 16, y - 32), value_noise(grid, x, y), atol=1e-4)
    n = value_noise(grid, x, y)
    assert (n >= grid.min() - 1e-6).all() and (n <= grid.max() + 1e-6).all()


def test_signature_colours_are_on_objects_only():
    """Each class's main slot wears its own saturated hue; no background or clutter surface (nor a
    class material borrowed by clutter) reaches that saturation."""
    from retab.synth.textures import Derived, MaterialSpec

    def specs(entry):
        return [s for s in (entry if isinstance(entry, tuple) else (entry,)) if isinstance(s, MaterialSpec)]

    hues = [catalog.SIGNATURES[name][1] for name in voc.CATEGORIES]
    assert sorted(hues) == list(range(0, 360, 18))  # 20 distinct hues, evenly spaced
    for name in voc.CATEGORIES:
        slot, hue = catalog.SIGNATURES[name]
        main = specs(catalog.CLASS_STYLES[name].materials[slot])
        assert main and all(s.hues == (hue,) and s.sat[0] >= 0.7 for s in main)
    surfaces = [catalog.ANY_SURFACE]
    for _, upper, lower, _ in catalog.SCENES.values():
        for entry in tuple(upper) + tuple(lower):
            surfaces += specs(entry)
    for name in voc.CATEGORIES:  # the other slots of every class too
        slot = catalog.SIGNATURES[name][0]
        surfaces += [s for other, entry in catalog.CLASS_STYLES[name].materials.items() if other != slot
                     for s in specs(entry)]
    assert all(s.sat[1] <= catalog.BACKGROUND_MAX_SAT for s in surfaces)
    for fold in range(4):  # the classes of one fold are 72 degrees apart
        fold_hues = sorted(hues[5 * fold:5 * fold + 5])
        gaps = np.diff(fold_hues + [fold_hues[0] + 360])
        assert list(gaps) == [72] * 5
    rng = np.random.default_rng(0)
    for name in voc.CATEGORIES:
        materials = catalog.CLASS_STYLES[name].materials
        for slot in materials:
            for _ in range(3):
                borrowed = scene._class_spec(rng, materials, slot)
                assert not isinstance(borrowed, Derived) and borrowed.sat[1] <= catalog.BACKGROUND_MAX_SAT


def test_every_fold_has_base_classes_seen_against_the_sky():
    """Scene lists name known scenes and companions known classes; and whichever fold is chosen, some
    of its base classes are usually photographed against the open sky (v7: before, only aeroplane
    and bird were, both novel in fold 0, so fold 0's base GT held no outline against the sky)."""
    for name in voc.CATEGORIES:
        style = catalog.CLASS_STYLES[name]
        assert set(style.scenes) <= set(catalog.SCENES) and set(style.companions) <= set(voc.CATEGORIES)
    sky_classes = {label for label, name in enumerate(voc.CATEGORIES, 1) if "sky" in catalog.CLASS_STYLES[name].scenes}
    for fold in range(4):
        assert len(sky_classes & set(voc.base_labels(fold))) >= 5, fold
