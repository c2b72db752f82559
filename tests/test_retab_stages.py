"""The RETAB stage scripts, `retab convert_cams`, the random-walk inference loop and
`RETAB/run_retab.sh` (SPEC 4 and 5): constructed cases, fold selection, skipping, format round
trips, a tiny end-to-end run of folds 0 and 3 on CPU, and bad input."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import copy_driver, step_commands
from retab import voc
from retab.cli import main as cli_main
from retab.data import image_to_tensor
from retab.data.transforms import GRID_SAMPLINGS, nearest_indices
from retab.engines.driver_settings import check_driver_settings
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_gray_png, save_npy, save_score_dict
from retab.voc import save_label_png
from retab.models import build_model
from retab.models.weights import load_weights, save_checkpoint
from retab.stages import train_affmixed_boundary, train_boundary
from retab.stages.make_splits import make_splits
from retab.engines.walk_inference import WalkConfig, affinity_features, input_scores

REPO = Path(__file__).resolve().parents[1]
WIDTH = 0.0625

# ----------------------------------------------------------------------------- a tiny VOC tree

# name -> (height, width, [(class index 0..19, top, left, bottom, right)])
# Classes: aeroplane 0 (novel in fold 0), car 6 (fold 1), dog 11 and person 14 (fold 2),
# sheep 16 and tvmonitor 19 (fold 3): folds 0 and 3 split train_aug differently.
TINY_IMAGES = {
    "2007_000001": (72, 88, [(0, 14, 20, 56, 72)]),
    "2007_000002": (80, 64, [(6, 8, 6, 44, 40), (14, 40, 30, 76, 60)]),
    "2007_000003": (64, 80, [(11, 20, 14, 58, 46)]),
    "2007_000004": (76, 72, [(16, 12, 16, 70, 60)]),
    "2007_000005": (64, 64, [(0, 6, 6, 30, 58), (11, 36, 14, 60, 50)]),
    "2007_000006": (56, 96, [(19, 10, 40, 50, 90)]),
    "2007_000007": (72, 72, [(14, 14, 14, 60, 50)]),   # val
    "2007_000008": (64, 72, [(6, 8, 20, 56, 60)]),     # val
}
TINY_TRAIN = ["2007_000001", "2007_000002", "2007_000003", "2007_000004"]
TINY_VAL = ["2007_000007", "2007_000008"]
TRAIN_AUG = sorted(set(TINY_IMAGES) - set(TINY_VAL))


def class_colour(k: int) -> np.ndarray:
    return np.array(voc.voc_palette()[3 * (k + 1):3 * (k + 2)], np.float64)


def build_tiny_voc(root: Path) -> Path:
    """Coloured rectangles on textured grey; masks with a 2-pixel 255 band along each outline."""
    rng = np.random.default_rng(0)
    for folder in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationClassAug"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, (height, width, boxes) in TINY_IMAGES.items():
        image = np.full((height, width, 3), 110.0) + rng.normal(0, 12, (height, width, 3))
        mask = np.zeros((height, width), np.uint8)
        objects = ""
        for k, top, left, bottom, right in boxes:
            patch = class_colour(k) * 0.7 + 40 + rng.normal(0, 10, (bottom - top, right - left, 3))
            image[top:bottom, left:right] = patch
            mask[top:bottom, left:right] = voc.IGNORE
            mask[top + 2:bottom - 2, left + 2:right - 2] = k + 1
            objects += f"<object><name>{voc.CATEGORIES[k]}</name></object>"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(voc.image_path(root, name), quality=95)
        voc.xml_path(root, name).write_text(f"<annotation><filename>{name}.jpg</filename>{objects}</annotation>")
        save_label_png(voc.mask_path(root, name, aug=True), mask)
        save_label_png(voc.mask_path(root, name, aug=False), mask)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("".join(n + "\n" for n in TINY_TRAIN))
    (lists / "val.txt").write_text("".join(n + "\n" for n in TINY_VAL))
    return root


def classes_of(name: str) -> list[int]:
    return sorted({k for k, *_ in TINY_IMAGES[name][2]})


def size_of(name: str) -> tuple[int, int]:
    return TINY_IMAGES[name][:2]


def blurred(binary: np.ndarray, passes: int = 3) -> np.ndarray:
    """A soft version of a 0/1 mask (repeated 5x5 box blur), scaled to max 1."""
    x = torch.from_numpy(binary.astype(np.float32))[None, None]
    for _ in range(passes):
        x = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    x = x[0, 0].numpy()
    return (x / (x.max() + 1e-5)).astype(np.float32)


def fabricated_cams(voc_root: Path, name: str) -> dict:
    """PSA-style CAM dict {class k: HxW} made from the blurred GT mask."""
    mask = voc.load_label_png(voc.mask_path(voc_root, name))
    return {k: blurred(mask == k + 1) for k in classes_of(name)}


def fabricated_crf(cams: dict, alpha: float) -> dict:
    """{0: background, k+1: map}, normalised to sum 1 like the CRF's output probabilities."""
    background = (1 - np.max(np.stack(list(cams.values())), axis=0)) ** alpha
    maps = {0: background, **{k + 1: cam for k, cam in cams.items()}}
    total = sum(maps.values())
    return {k: (m / total).astype(np.float32) for k, m in maps.items()}


def fabricate_psa_outputs(psa_dir: Path, voc_root: Path) -> None:
    """psa/out/{psa_trainaug_cam, psa_trainaug_crf_4.0, psa_trainaug_crf_32.0} and psa/best/res38_cls.pth."""
    out = psa_dir / "out"
    for name in TRAIN_AUG:
        cams = fabricated_cams(voc_root, name)
        save_score_dict(out / "psa_trainaug_cam" / f"{name}.npy", cams)
        save_score_dict(out / "psa_trainaug_crf_4.0" / f"{name}.npy", fabricated_crf(cams, 4))
        save_score_dict(out / "psa_trainaug_crf_32.0" / f"{name}.npy", fabricated_crf(cams, 32))
    torch.manual_seed(0)
    save_checkpoint(psa_dir / "best" / "res38_cls.pth", build_model("cls", WIDTH))


def build_tiny_tree(tmp: Path) -> dict:
    """A tiny VOC tree with its lists, fabricated PSA outputs, and random affinity / boundary nets."""
    voc_root = build_tiny_voc(tmp / "tiny_voc" / "VOC2012")
    lists = tmp / "voc12"
    make_splits(voc_root, lists, workers=1)
    fabricate_psa_outputs(tmp / "psa", voc_root)
    torch.manual_seed(1)
    save_checkpoint(tmp / "aff.pth", build_model("aff", WIDTH))
    torch.manual_seed(2)
    save_checkpoint(tmp / "boundary.pth", build_model("boundary", WIDTH))
    return {"tmp": tmp, "voc": voc_root, "lists": lists, "psa": tmp / "psa"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_tree(tmp_path_factory.mktemp("retab_tiny"))


def base_names_by_mask(voc_root: Path, fold: int) -> list[str]:
    """Base samples of train_aug computed from the masks here (independently of make_splits)."""
    novel = set(voc.novel_labels(fold))
    return [n for n in TRAIN_AUG if not novel & set(np.unique(voc.load_label_png(voc.mask_path(voc_root, n))))]


# ----------------------------------------------------------------------------- boundary target maps

def erode_by_hand(non_boundary: np.ndarray) -> np.ndarray:
    """3x3 erosion with replicate padding: a pixel stays non-boundary only if its 9 neighbours are."""
    padded = np.pad(non_boundary, 1, mode="edge")
    h, w = non_boundary.shape
    windows = [padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
    return np.logical_and.reduce(windows)


def test_prop_boundary_target_thresholds_and_erodes_the_nets_probabilities(tiny, tmp_path):
    name = TINY_TRAIN[1]
    model = build_model("boundary", WIDTH)
    load_weights(model, tiny["tmp"] / "boundary.pth")
    model.eval()
    img = voc.load_image(voc.image_path(tiny["voc"], name))
    with torch.no_grad():
        prob = torch.sigmoid(model(image_to_tensor(img)[None]))[0, 0].numpy()
    threshold = float(np.median(prob))  # a threshold that splits this random net's map in two
    (tmp_path / "one.txt").write_text(name + "\n")
    common = ["--weights", str(tiny["tmp"] / "boundary.pth"), "--width", str(WIDTH), "--voc12_root",
              str(tiny["voc"]), "--infer_list", str(tmp_path / "one.txt"), "--threshold", repr(threshold),
              "--device", "cpu", "--num_workers", "0"]
    for kernel in (0, 3):
        out = tmp_path / f"k{kernel}"
        assert cli_main(["prop_boundary_target", "--kernel", str(kernel), "--out_dir", str(out)] + common) == 0
        with Image.open(out / f"{name}.png") as png:
            assert png.mode == "L"
            target = np.array(png)
        non_boundary = prob < threshold
        expected = non_boundary if kernel == 0 else erode_by_hand(non_boundary)
        assert target.shape == size_of(name)
        np.testing.assert_array_equal(target, np.where(expected, 255, 0))
        assert 0 < expected.sum() < expected.size
    eroded, plain = (np.array(Image.open(tmp_path / k / f"{name}.png")) for k in ("k3", "k0"))
    assert (eroded <= plain).all()


def test_prop_boundary_target_skips_finished_maps_and_rejects_an_even_kernel(tiny, tmp_path, capsys):
    out = tmp_path / "targets"
    done = TRAIN_AUG[0]
    sentinel = np.full(size_of(done), 7, np.uint8)
    save_gray_png(out / f"{done}.png", sentinel)
    args = ["prop_boundary_target", "--weights", str(tiny["tmp"] / "boundary.pth"), "--width", str(WIDTH),
            "--voc12_root", str(tiny["voc"]), "--infer_list", str(tiny["lists"] / "train_aug.txt"),
            "--out_dir", str(out), "--device", "cpu", "--num_workers", "0"]
    assert cli_main(args) == 0
    np.testing.assert_array_equal(np.array(Image.open(out / f"{done}.png")), sentinel)
    for name in TRAIN_AUG[1:]:
        target = np.array(Image.open(out / f"{name}.png"))
        assert target.shape == size_of(name) and set(np.unique(target)) <= {0, 255}
    assert cli_main(args + ["--overwrite"]) == 0
    assert set(np.unique(np.array(Image.open(out / f"{done}.png")))) <= {0, 255}
    assert cli_main(args + ["--kernel", "2"]) == 2
    assert "kernel" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fold selection

def test_train_boundary_fold_picks_the_base_list_of_that_fold(tiny, monkeypatch, tmp_path, caplog):
    used = {}

    def fake_train(model, optimizer, dataset, step_fn, cfg, device, val_fn=None):
        used[cfg.session_name] = list(dataset.names)

    monkeypatch.setattr(train_boundary, "train", fake_train)
    for fold in (0, 3):
        with caplog.at_level("INFO", logger="retab"):
            rc = train_boundary.main(["--fold", str(fold), "--voc12_root", str(tiny["voc"]),
                                      "--list_dir", str(tiny["lists"]), "--width", str(WIDTH),
                                      "--device", "cpu", "--num_workers", "0", "--out_dir", str(tmp_path)])
        assert rc == 0
        assert str(tiny["lists"] / f"trainaug_fold{fold}_base.txt") in caplog.text
        assert sorted(used[f"resnet38_boundary_fold{fold}"]) == base_names_by_mask(tiny["voc"], fold)
    assert set(used["resnet38_boundary_fold0"]) != set(used["resnet38_boundary_fold3"])


def test_train_affmixed_fold_picks_the_base_samples_of_that_fold(tiny, monkeypatch, tmp_path):
    used = {}

    def fake_train(model, optimizer, dataset, step_fn, cfg, device, val_fn=None):
        used[cfg.session_name] = (list(dataset.names), set(dataset.base_names), dataset.grid_sampling)

    monkeypatch.setattr(train_affmixed_boundary, "train", fake_train)
    psa_out = tiny["psa"] / "out"
    for fold, sampling in ((0, []), (3, ["--grid_sampling", "nearest-exact"])):
        rc = train_affmixed_boundary.main([
            "--fold", str(fold), "--voc12_root", str(tiny["voc"]), "--list_dir", str(tiny["lists"]),
            "--train_list", str(tiny["lists"] / "train_aug.txt"),
            "--la_crf_dir", str(psa_out / "psa_trainaug_crf_4.0"),
            "--ha_crf_dir", str(psa_out / "psa_trainaug_crf_32.0"),
            "--width", str(WIDTH), "--device", "cpu", "--num_workers", "0", "--out_dir", str(tmp_path)] + sampling)
        assert rc == 0
        names, base, _ = used[f"resnet38_affmixed_fold{fold}"]
        assert sorted(names) == TRAIN_AUG
        assert sorted(base) == base_names_by_mask(tiny["voc"], fold)
    assert used["resnet38_affmixed_fold0"][1] != used["resnet38_affmixed_fold3"][1]
    # the published top-left sampling by default; the flag reaches the dataset
    assert used["resnet38_affmixed_fold0"][2] == "nearest" and used["resnet38_affmixed_fold3"][2] == "nearest-exact"


def test_train_affmixed_rejects_lists_that_do_not_cover_the_training_list(tiny, tmp_path, capsys):
    base = tmp_path / "base.txt"
    base.write_text(TRAIN_AUG[0] + "\n")
    novel = tmp_path / "novel.txt"
    novel.write_text(TRAIN_AUG[1] + "\n")
    psa_out = tiny["psa"] / "out"
    rc = cli_main(["train_affmixed_boundary", "--voc12_root", str(tiny["voc"]),
                   "--train_list", str(tiny["lists"] / "train_aug.txt"), "--base_dir", str(base),
                   "--novel_dir", str(novel), "--la_crf_dir", str(psa_out / "psa_trainaug_crf_4.0"),
                   "--ha_crf_dir", str(psa_out / "psa_trainaug_crf_32.0"), "--width", str(WIDTH),
                   "--device", "cpu", "--out_dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert TRAIN_AUG[2] in err and str(base) in err and not (tmp_path / "resnet38_affmixed_fold0.pth").exists()


def test_train_affmixed_rejects_a_crop_without_pairs(tiny, tmp_path, capsys):
    psa_out = tiny["psa"] / "out"
    args = ["train_affmixed_boundary", "--voc12_root", str(tiny["voc"]), "--list_dir", str(tiny["lists"]),
            "--train_list", str(tiny["lists"] / "train_aug.txt"), "--la_crf_dir", str(psa_out / "psa_trainaug_crf_4.0"),
            "--ha_crf_dir", str(psa_out / "psa_trainaug_crf_32.0"), "--width", str(WIDTH), "--device", "cpu",
            "--out_dir", str(tmp_path)]
    assert cli_main(args + ["--crop_size", "64"]) == 2  # 8 x 8 grid: no pair spans radius 5 inside it
    assert "use at least 72" in capsys.readouterr().err


# ----------------------------------------------------------------------------- convert_cams

def write_irn(path: Path, keys, high_res=None, cam=None, as_torch: bool = False) -> None:
    """An IRN make_cam file: np.save of {'keys', 'cam', 'high_res'} (IRN stores torch tensors for keys / cam)."""
    obj = {"keys": torch.tensor(keys) if as_torch else np.asarray(keys)}
    if cam is not None:
        obj["cam"] = torch.from_numpy(cam) if as_torch else cam
    if high_res is not None:
        obj["high_res"] = high_res
    save_npy(path, obj)


def test_convert_cams_irn_high_res_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    high_res = {"a": rng.random((2, 37, 50), dtype=np.float32), "b": rng.random((1, 20, 30), dtype=np.float32)}
    write_irn(tmp_path / "irn" / "a.npy", [2, 7], high_res=high_res["a"], cam=rng.random((2, 10, 13), dtype=np.float32),
              as_torch=True)
    write_irn(tmp_path / "irn" / "b.npy", np.array([19]), high_res=high_res["b"])
    assert cli_main(["convert_cams", "--format", "irn", "--in_dir", str(tmp_path / "irn"),
                     "--out_dir", str(tmp_path / "cams")]) == 0
    a = load_score_dict(tmp_path / "cams" / "a.npy")
    b = load_score_dict(tmp_path / "cams" / "b.npy")
    assert sorted(a) == [2, 7] and sorted(b) == [19]
    np.testing.assert_array_equal(a[2], high_res["a"][0])
    np.testing.assert_array_equal(a[7], high_res["a"][1])
    np.testing.assert_array_equal(b[19], high_res["b"][0])
    assert all(m.dtype == np.float32 for m in (*a.values(), *b.values()))


def test_convert_cams_upsamples_strided_only_cams_to_the_image_size(tmp_path):
    # A linear ramp sampled at the centres of 4x4 cells: bilinear upsampling (align_corners=False)
    # reproduces the ramp exactly between the first and last cell centres, and clamps outside.
    height, width, stride = 37, 50, 4
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    Image.new("RGB", (width, height)).save(voc.image_path(root, "img"))
    gh, gw = -(-height // stride), -(-width // stride)  # 10 x 13
    centres_y = stride * np.arange(gh) + (stride - 1) / 2
    centres_x = stride * np.arange(gw) + (stride - 1) / 2
    ramp_y = np.repeat((0.01 * centres_y)[:, None], gw, axis=1)
    ramp_x = np.repeat((0.02 * centres_x)[None, :], gh, axis=0)
    write_irn(tmp_path / "irn" / "img.npy", [4, 9], cam=np.stack([ramp_y, ramp_x]).astype(np.float32), as_torch=True)
    args = ["convert_cams", "--format", "irn", "--in_dir", str(tmp_path / "irn"), "--out_dir", str(tmp_path / "cams")]
    assert cli_main(args) == 2  # the image size is needed: --voc12_root
    assert cli_main(args + ["--voc12_root", str(root)]) == 0
    cams = load_score_dict(tmp_path / "cams" / "img.npy")
    assert sorted(cams) == [4, 9] and cams[4].shape == (height, width)
    y = np.clip(np.arange(height), centres_y[0], centres_y[-1])
    x = np.clip(np.arange(width), centres_x[0], centres_x[-1])
    np.testing.assert_allclose(cams[4], np.repeat((0.01 * y)[:, None], width, axis=1), atol=1e-6)
    np.testing.assert_allclose(cams[9], np.repeat((0.02 * x)[None, :], height, axis=0), atol=1e-6)


@pytest.mark.parametrize("content, message", [
    ({3: np.zeros((4, 4), np.float32)}, "already a score dict"),
    ({"keys": np.array([1, 2]), "high_res": np.zeros((3, 4, 4), np.float32)}, "shape"),
    ({"keys": np.array([25]), "high_res": np.zeros((1, 4, 4), np.float32)}, "outside 0..19"),
    ({"keys": np.array([1])}, "'cam' or 'high_res'"),
    (np.zeros((2, 4, 4), np.float32), "expected an IRN dict"),
])
def test_convert_cams_names_a_file_that_is_not_irn(tmp_path, capsys, content, message):
    save_npy(tmp_path / "irn" / "x.npy", content)
    rc = cli_main(["convert_cams", "--format", "irn", "--in_dir", str(tmp_path / "irn"),
                   "--out_dir", str(tmp_path / "cams")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert str(tmp_path / "irn" / "x.npy") in err and message in err
    assert not (tmp_path / "cams" / "x.npy").exists()


# ----------------------------------------------------------------------------- random-walk inference

def walk_args(tiny, stage: str, cam_dir, boundary_target_dir, out: Path, names) -> list[str]:
    listing = out / "list.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(n + "\n" for n in names))
    command = "infer_aff_cam_boundary" if stage == "stage1" else "infer_aff_cam_boundary_secondary"
    return [command, "--weights", str(tiny["tmp"] / "aff.pth"), "--width", str(WIDTH), "--voc12_root",
            str(tiny["voc"]), "--infer_list", str(listing), "--cam_dir", str(cam_dir), "--targetpixel_dir",
            str(boundary_target_dir), "--out_rw", str(out / f"rw_{stage}"), "--out_rw_cam", str(out / f"cam_{stage}"),
            "--device", "cpu", "--num_workers", "0"]


def write_targets(folder: Path, names, make) -> Path:
    for name in names:
        save_gray_png(folder / f"{name}.png", make(size_of(name), name))
    return folder


def stripes(hw, name) -> np.ndarray:
    """A target map with boundary stripes (0) every few rows and columns."""
    target = np.full(hw, 255, np.uint8)
    target[::13] = 0
    target[:, ::11] = 0
    return target


def pool_and_upsample(scores: np.ndarray) -> np.ndarray:
    """What the walk returns when T is the identity: 8x8 average pool of the zero-padded scores,
    bilinear upsample to the padded size, crop (written out here with numpy pooling)."""
    c, h, w = scores.shape
    ph, pw = -(-h // 8) * 8, -(-w // 8) * 8
    padded = np.zeros((c, ph, pw), np.float64)
    padded[:, :h, :w] = scores
    pooled = padded.reshape(c, ph // 8, 8, pw // 8, 8).mean(axis=(2, 4))
    up = F.interpolate(torch.from_numpy(pooled)[None], size=(ph, pw), mode="bilinear", align_corners=False)[0]
    return up[:, :h, :w].numpy()


def test_walk_stage1_then_stage2_keys_labels_and_skipping(tiny, tmp_path):
    cam_dir = tiny["psa"] / "out" / "psa_trainaug_cam"
    targets = write_targets(tmp_path / "targets", TRAIN_AUG, stripes)
    assert cli_main(walk_args(tiny, "stage1", cam_dir, targets, tmp_path, TRAIN_AUG)) == 0
    for name in TRAIN_AUG:
        walked = load_score_dict(tmp_path / "cam_stage1" / f"{name}.npy")
        labels = voc.load_label_png(tmp_path / "rw_stage1" / f"{name}.png")
        assert sorted(walked) == [0] + [k + 1 for k in classes_of(name)]
        assert labels.shape == size_of(name) and all(m.shape == size_of(name) for m in walked.values())
        keys = sorted(walked)
        np.testing.assert_array_equal(labels, np.asarray(keys)[np.argmax(np.stack([walked[k] for k in keys]), 0)])

    # stage 2 reads stage 1's dicts; one image is already done and must stay untouched
    done = TRAIN_AUG[0]
    stage2_png, stage2_dict = tmp_path / "rw_stage2" / f"{done}.png", tmp_path / "cam_stage2" / f"{done}.npy"
    save_label_png(stage2_png, np.zeros(size_of(done), np.uint8))
    save_score_dict(stage2_dict, {0: np.ones(size_of(done), np.float32)})
    before = (stage2_png.stat().st_mtime_ns, stage2_dict.stat().st_mtime_ns)
    args2 = walk_args(tiny, "stage2", tmp_path / "cam_stage1", targets, tmp_path, TRAIN_AUG)
    assert cli_main(args2 + ["--alpha", "16"]) == 0  # the published command line passes --alpha
    assert (stage2_png.stat().st_mtime_ns, stage2_dict.stat().st_mtime_ns) == before
    for name in TRAIN_AUG[1:]:
        walked = load_score_dict(tmp_path / "cam_stage2" / f"{name}.npy")
        assert sorted(walked) == sorted(load_score_dict(tmp_path / "cam_stage1" / f"{name}.npy"))
        labels = voc.load_label_png(tmp_path / "rw_stage2" / f"{name}.png")
        assert set(np.unique(labels)) <= {0} | {k + 1 for k in classes_of(name)}
    assert cli_main(args2 + ["--overwrite"]) == 0
    assert sorted(load_score_dict(stage2_dict)) == [0] + [k + 1 for k in classes_of(done)]


def test_walk_without_walking_pairs_returns_the_pooled_scores(tiny, tmp_path):
    """Stage 1 with every pixel on a boundary and stage 2 with none keep only A's identity: the
    output is the input scores pooled to the grid and upsampled back."""
    name = TINY_TRAIN[1]
    cam_dir = tiny["psa"] / "out" / "psa_trainaug_cam"
    all_boundary = write_targets(tmp_path / "t0", [name], lambda hw, n: np.zeros(hw, np.uint8))
    no_boundary = write_targets(tmp_path / "t255", [name], lambda hw, n: np.full(hw, 255, np.uint8))
    assert cli_main(walk_args(tiny, "stage1", cam_dir, all_boundary, tmp_path, [name]) + ["--alpha", "4"]) == 0
    cams = load_score_dict(cam_dir / f"{name}.npy")
    scores, keys = input_scores(cams, WalkConfig("stage1", alpha=4), *size_of(name))
    expected = pool_and_upsample(scores[keys])
    walked = load_score_dict(tmp_path / "cam_stage1" / f"{name}.npy")
    np.testing.assert_allclose(np.stack([walked[k] for k in keys]), expected, rtol=1e-5, atol=1e-6)
    background = (1 - np.max(np.stack(list(cams.values())), axis=0)) ** 4  # alpha 4, written out
    np.testing.assert_allclose(walked[0], pool_and_upsample(background[None])[0], rtol=1e-5, atol=1e-6)

    assert cli_main(walk_args(tiny, "stage2", tmp_path / "cam_stage1", no_boundary, tmp_path, [name])) == 0
    walked2 = load_score_dict(tmp_path / "cam_stage2" / f"{name}.npy")
    np.testing.assert_allclose(np.stack([walked2[k] for k in keys]),
                               pool_and_upsample(np.stack([walked[k] for k in keys])), rtol=1e-5, atol=1e-6)


def test_walk_grid_sampling_picks_which_target_pixels_mark_a_cell(tiny, tmp_path):
    """A target map that is 0 only at each cell's centre pixel: --grid_sampling nearest-exact makes
    every cell a boundary (stage 1 then returns the pooled scores), the published nearest sees none."""
    name = TINY_TRAIN[1]
    h, w = size_of(name)
    rows = nearest_indices(h, -(-h // 8), "nearest-exact")
    cols = nearest_indices(w, -(-w // 8), "nearest-exact")
    assert not set(rows) & set(nearest_indices(h, -(-h // 8))) and not set(cols) & set(nearest_indices(w, -(-w // 8)))

    def centres(hw, n):
        target = np.full(hw, 255, np.uint8)
        target[np.ix_(rows, cols)] = 0
        return target

    targets = write_targets(tmp_path / "t", [name], centres)
    cam_dir = tiny["psa"] / "out" / "psa_trainaug_cam"
    cams = load_score_dict(cam_dir / f"{name}.npy")
    scores, keys = input_scores(cams, WalkConfig("stage1", alpha=4), h, w)
    outputs = {}
    for sampling in ("nearest-exact", "nearest"):
        out = tmp_path / sampling
        assert cli_main(walk_args(tiny, "stage1", cam_dir, targets, out, [name])
                        + ["--alpha", "4", "--grid_sampling", sampling]) == 0
        walked = load_score_dict(out / "cam_stage1" / f"{name}.npy")
        outputs[sampling] = np.stack([walked[k] for k in keys])
    np.testing.assert_allclose(outputs["nearest-exact"], pool_and_upsample(scores[keys]), rtol=1e-5, atol=1e-6)
    assert np.abs(outputs["nearest"] - pool_and_upsample(scores[keys])).max() > 1e-3


def test_walk_features_cover_the_padded_grid(tiny):
    model = build_model("aff", WIDTH).eval()
    for name in TRAIN_AUG:
        img = voc.load_image(voc.image_path(tiny["voc"], name))
        h, w = size_of(name)
        assert tuple(affinity_features(model, img, torch.device("cpu")).shape[1:]) == (-(-h // 8), -(-w // 8))


def test_walk_errors_name_the_missing_file_and_a_stage2_dict_without_background(tiny, tmp_path, capsys):
    cam_dir = tiny["psa"] / "out" / "psa_trainaug_cam"
    targets = write_targets(tmp_path / "targets", TRAIN_AUG[:1], stripes)
    rc = cli_main(walk_args(tiny, "stage1", cam_dir, targets, tmp_path, TRAIN_AUG[:2]))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(targets / f"{TRAIN_AUG[1]}.png") in err
    # CAM dicts handed to stage 2 by mistake: without aeroplane (class 0) they hold no key 0
    name = "2007_000002"
    write_targets(targets, [name], stripes)
    rc = cli_main(walk_args(tiny, "stage2", cam_dir, targets, tmp_path, [name]))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(cam_dir / f"{name}.npy") in err and "key 0" in err


# ----------------------------------------------------------------------------- run_retab.sh

def retab_env(voc_root: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update(PYTHON=sys.executable, VOC12HOME=str(voc_root), DEVICE="cpu", WIDTH=str(WIDTH), SEED="0",
               CROP_SIZE="80", BATCH_SIZE="4", BOUNDARY_EPOCHS="1", AFF_EPOCHS="1", NUM_WORKERS="0")
    for key in ("WEIGHTS", "FOLD", "OUT", "PSA_OUT", "PSA_CLS", "INFER_LIST", "AMP", "GRID_SAMPLING", "ALPHA", "BETA", "LOGT",
                "AFF_WEIGHTS"):
        env.pop(key, None)
    env.update(extra)
    return env


WALK_SETTINGS = {"ALPHA": "4", "BETA": "12", "LOGT": "3"}


def run_retab(retab_dir: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "run_retab.sh"], cwd=retab_dir, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def retab_runs(tiny):
    """`FOLD=0 sh run_retab.sh` and `FOLD=3 sh run_retab.sh` in a copy of RETAB/ beside the fabricated psa/
    (fold 3 with the walk settings WALK_SETTINGS)."""
    retab_dir = copy_driver("RETAB", tiny["tmp"])
    runs = {}
    for fold in (0, 3):
        proc = run_retab(retab_dir, retab_env(tiny["voc"], FOLD=str(fold), **(WALK_SETTINGS if fold == 3 else {})))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[fold] = proc
    return {"dir": retab_dir, "procs": runs}


@pytest.mark.slow
@pytest.mark.parametrize("fold", [0, 3])
def test_run_retab_end_to_end(tiny, retab_runs, fold):
    retab_dir = retab_runs["dir"]
    out = retab_dir / "out" / f"fold{fold}"
    psa_out = (tiny["psa"] / "out").resolve()
    assert (retab_dir / "psa_initcam" / "psa_trainaug_cam").resolve() == psa_out / "psa_trainaug_cam"
    assert (retab_dir / "psa_afflabel" / "psa_trainaug_crf_4.0").is_dir()
    stdout, stderr = retab_runs["procs"][fold].stdout, retab_runs["procs"][fold].stderr
    # the PSA classifier started both trainings (auto without the ImageNet weights)
    assert stderr.count("starting from the backbone of ../psa/best/res38_cls.pth, not from the published ImageNet") == 2

    for ckpt, kind in ((out / "boundary_model" / f"resnet38_boundary_fold{fold}.pth", "boundary"),
                       (out / "affmodel" / f"resnet38_affmixed_fold{fold}.pth", "aff")):
        assert load_weights(build_model(kind, WIDTH), ckpt, strict=True).clean

    targets = out / "boundary_pred" / f"boundary_fold{fold}_kernel0_threshold0.5"
    assert sorted(p.stem for p in targets.glob("*.png")) == TRAIN_AUG
    for name in TRAIN_AUG:
        target = voc.load_label_png(targets / f"{name}.png")
        assert target.shape == size_of(name) and set(np.unique(target)) <= {0, 255}
        present = {0} | {k + 1 for k in classes_of(name)}
        stage1 = load_score_dict(out / "rw_cam_stage1" / f"{name}.npy")
        stage2 = load_score_dict(out / "rw_cam_stage2" / f"{name}.npy")
        assert sorted(stage1) == sorted(stage2) == sorted(present)
        labels = voc.load_label_png(out / "rw_stage2" / f"{name}.png")
        assert labels.shape == size_of(name) and set(np.unique(labels)) <= present

    log = (out / "evallog.txt").read_text()
    summaries = re.findall(r"^(\d+\.\d\d)/(\d+\.\d\d)/(\d+\.\d\d)(, bgscore:\d\.\d\d)?$", log, re.M)
    # CAM scan (best mIoU, best novel-mIoU), stage-2 PNGs, stage-2 dict scan (two entries)
    assert [bool(s[3]) for s in summaries] == [True, True, False, True, True]
    assert all(0 <= float(v) <= 100 for s in summaries for v in s[:3])
    steps = [line.split("\t") for line in (out / "timings.tsv").read_text().splitlines()]
    names = [s for s, _ in steps]
    expected = ["train_boundary", "prop_boundary_target", "train_affmixed_boundary", "rw_stage1", "rw_stage2",
                "eval_cam", "eval_rw", "eval_rw_searchbg"]
    assert names == (["dataset"] + expected if fold == 0 else expected)  # fold 3 reuses the lists
    assert all(float(sec) >= 0 for _, sec in steps)
    # ALPHA, BETA and LOGT reach the walks (stage 2 has no CAM input, hence no alpha); published 16 / 8 / 8
    alpha, beta, logt = ("4", "12", "3") if fold == 3 else ("16", "8", "8")
    commands = step_commands(stdout)
    assert f" --alpha {alpha} --beta {beta} --logt {logt} " in commands["rw_stage1"]
    assert f" --beta {beta} --logt {logt} " in commands["rw_stage2"] and "--alpha" not in commands["rw_stage2"]


@pytest.mark.slow
def test_run_retab_folds_train_on_different_base_samples(tiny, retab_runs):
    logs = {fold: proc.stderr for fold, proc in retab_runs["procs"].items()}
    counts = {}
    for fold, text in logs.items():
        match = re.search(r"train_boundary: fold (\d), (\d+) base samples from (\S+)", text)
        assert match and int(match.group(1)) == fold and match.group(3).endswith(f"trainaug_fold{fold}_base.txt")
        counts[fold] = int(match.group(2))
    assert counts == {f: len(base_names_by_mask(tiny["voc"], f)) for f in (0, 3)}


@pytest.mark.parametrize("setting, value, message", [
    ("FOLD", "7", "FOLD must be 0, 1, 2 or 3"),
    ("AMP", "fp8", "AMP must be none, bf16 or fp16"),
    ("LA_ALPHA", "-1", "LA_ALPHA must be a positive decimal number"),
    ("HA_ALPHA", "4/", "HA_ALPHA must be a positive decimal number"),
    ("HA_ALPHA", "1e3", "HA_ALPHA must be a positive decimal number"),
    ("GRID_SAMPLING", "centre", "GRID_SAMPLING must be nearest or nearest-exact"),
])
def test_run_retab_rejects_a_bad_setting(tmp_path, setting, value, message):
    """A bad FOLD or GRID_SAMPLING (run_retab.sh), AMP or CRF exponent (driver_lib.sh, shared by the
    three drivers) stops the driver before it writes anything."""
    retab_dir = copy_driver("RETAB", tmp_path)
    proc = run_retab(retab_dir, retab_env(tmp_path, **{setting: value}))
    assert proc.returncode == 2
    assert message in proc.stderr and f"'{value}'" in proc.stderr
    assert not (retab_dir / "out").exists()


def test_run_retab_accepts_the_grid_samplings_of_the_package():
    """The drivers' settings check (which must not import torch) repeats
    retab.data.transforms.GRID_SAMPLINGS; the two must not drift apart."""
    for sampling in GRID_SAMPLINGS:
        check_driver_settings("run_retab", {"GRID_SAMPLING": sampling})
    with pytest.raises(RetabError, match="GRID_SAMPLING must be nearest or nearest-exact, got 'centre'"):
        check_driver_settings("run_retab", {"GRID_SAMPLING": "centre"})


def test_run_retab_names_a_missing_psa_output(tmp_path):
    retab_dir = copy_driver("RETAB", tmp_path)
    psa_out = tmp_path / "psa" / "out"
    for d in ("psa_trainaug_cam", "psa_trainaug_crf_4.0"):
        (psa_out / d).mkdir(parents=True)
    proc = run_retab(retab_dir, retab_env(tmp_path, FOLD="1"))
    assert proc.returncode == 2
    assert "../psa/out/psa_trainaug_crf_32.0" in proc.stderr and "run psa/run_psa.sh first" in proc.stderr
    assert not (retab_dir / "psa_initcam").exists() and not (retab_dir / "out").exists()
    # other CRF exponents read other folders, named as run_psa.sh names them (0.5 and 8 -> 8.0)
    (psa_out / "psa_trainaug_crf_0.5").mkdir()
    proc = run_retab(retab_dir, retab_env(tmp_path, FOLD="1", LA_ALPHA="0.5", HA_ALPHA="8"))
    assert proc.returncode == 2 and "../psa/out/psa_trainaug_crf_8.0 not found" in proc.stderr


# ----------------------------------------------------------------------------- published affinity checkpoints

def published_affnet(source: Path, dest: Path, data_parallel: bool) -> Path:
    """An affinity net as the published psa_ourbest_fold{F}_affnet.pth: the plain state dict of the
    published keys; with `data_parallel`, saved from nn.DataParallel by an older PyTorch (every key
    prefixed `module.`, no BatchNorm `num_batches_tracked`)."""
    state = torch.load(source, weights_only=True)
    if data_parallel:
        state = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dest)
    return dest


class RunsCodeWhenUnpickled:
    """A pickle that writes a file when loaded: weights_only=True must refuse it unopened."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.mark.parametrize("data_parallel", [False, True])
def test_check_weights_loads_a_published_affnet_as_given(tiny, tmp_path, capsys, data_parallel):
    source = tiny["tmp"] / "aff.pth"
    ckpt = published_affnet(source, tmp_path / "psa_ourbest_fold0_affnet.pth", data_parallel)
    assert cli_main(["check_weights", "--kind", "aff", "--width", str(WIDTH), "--weights", str(ckpt)]) == 0
    assert "AffinityNet" in capsys.readouterr().out
    from retab.engines.stage_support import load_trained_weights
    model = build_model("aff", WIDTH)
    load_trained_weights(model, ckpt)
    expected = torch.load(source, weights_only=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items() if not k.endswith("num_batches_tracked"))


def test_check_weights_refuses_another_network_in_one_line(tiny, tmp_path, capsys):
    cls_ckpt = tiny["psa"] / "best" / "res38_cls.pth"
    boundary = published_affnet(tiny["tmp"] / "boundary.pth", tmp_path / "boundary_dp.pth", data_parallel=True)
    torch.manual_seed(3)
    other_width = tmp_path / "aff_wide.pth"
    save_checkpoint(other_width, build_model("aff", 2 * WIDTH))
    marker = tmp_path / "marker.txt"
    code = tmp_path / "code.pth"
    torch.save({"f9.weight": RunsCodeWhenUnpickled(marker)}, code)
    cases = [(cls_ckpt, "holds the weights of the classification net, not of the affinity net"),
             (boundary, "holds the weights of the boundary net, not of the affinity net"),
             (other_width, "with the wrong shape"),
             (code, "cannot be read as a torch weights file"),
             (tmp_path / "missing.pth", "weights file not found")]
    for path, message in cases:
        rc = cli_main(["check_weights", "--kind", "aff", "--width", str(WIDTH), "--weights", str(path)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and f"{path}: " in err and message in err, err
    assert not marker.exists()


@pytest.mark.slow
def test_run_retab_walks_a_given_affinity_net_without_training_it(tiny, tmp_path):
    """AFF_WEIGHTS: the walks read the given checkpoint (here `module.`-prefixed) exactly as the
    same weights loaded directly; nothing trains the affinity net, the file is not rewritten, and
    no CRF labels are needed. The boundary net is given too (its checkpoint in place), so nothing trains."""
    retab_dir = copy_driver("RETAB", tmp_path)
    out = retab_dir / "out" / "fold0"
    boundary_ckpt = out / "boundary_model" / "resnet38_boundary_fold0.pth"
    boundary_ckpt.parent.mkdir(parents=True)
    boundary_ckpt.write_bytes((tiny["tmp"] / "boundary.pth").read_bytes())
    ckpt = published_affnet(tiny["tmp"] / "aff.pth", tmp_path / "published" / "psa_ourbest_fold0_affnet.pth",
                            data_parallel=True)
    before = (ckpt.read_bytes(), ckpt.stat().st_mtime_ns)
    psa_out = tmp_path / "psa_cams_only"  # CAMs without the CRF label folders
    psa_out.mkdir()
    (psa_out / "psa_trainaug_cam").symlink_to(tiny["psa"] / "out" / "psa_trainaug_cam")

    proc = run_retab(retab_dir, retab_env(tiny["voc"], FOLD="0", PSA_OUT=str(psa_out), AFF_WEIGHTS=str(ckpt)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (ckpt.read_bytes(), ckpt.stat().st_mtime_ns) == before
    assert not (out / "affmodel").exists() and not (out / "tblog_aff").exists()
    steps = [line.split("\t")[0] for line in (out / "timings.tsv").read_text().splitlines()]
    assert steps == ["dataset", "prop_boundary_target", "rw_stage1", "rw_stage2", "eval_cam", "eval_rw",
                     "eval_rw_searchbg"]
    commands = step_commands(proc.stdout)
    assert f"--weights {ckpt} " in commands["rw_stage1"] and f"--weights {ckpt} " in commands["rw_stage2"]
    assert "no ImageNet weights" not in proc.stderr  # no initial weights were looked for: nothing trains

    # the same walks with the project's own checkpoint of the same weights, loaded directly (on a
    # novel and a base sample of fold 0)
    names = ["2007_000001", "2007_000002"]
    targets = out / "boundary_pred" / "boundary_fold0_kernel0_threshold0.5"
    direct = tmp_path / "direct"
    assert cli_main(walk_args(tiny, "stage1", tiny["psa"] / "out" / "psa_trainaug_cam", targets, direct, names)) == 0
    assert cli_main(walk_args(tiny, "stage2", direct / "cam_stage1", targets, direct, names)) == 0
    for name in names:
        for stage in ("stage1", "stage2"):
            np.testing.assert_array_equal(voc.load_label_png(out / f"rw_{stage}" / f"{name}.png"),
                                          voc.load_label_png(direct / f"rw_{stage}" / f"{name}.png"))
            got = load_score_dict(out / f"rw_cam_{stage}" / f"{name}.npy")
            want = load_score_dict(direct / f"cam_{stage}" / f"{name}.npy")
            assert sorted(got) == sorted(want)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("which, message", [
    ("classifier", "holds the weights of the classification net, not of the affinity net"),
    ("boundary", "holds the weights of the boundary net, not of the affinity net"),
])
def test_run_retab_refuses_another_network_as_aff_weights(tiny, tmp_path, which, message):
    """A wrong AFF_WEIGHTS stops the driver before it links, trains or writes anything."""
    path = tiny["psa"] / "best" / "res38_cls.pth" if which == "classifier" else tiny["tmp"] / "boundary.pth"
    retab_dir = copy_driver("RETAB", tmp_path)
    proc = run_retab(retab_dir, retab_env(tiny["voc"], AFF_WEIGHTS=str(path), PSA_OUT=str(tiny["psa"] / "out")))
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("run_retab: error: AFF_WEIGHTS: ") and str(path) in err and message in err
    assert not (retab_dir / "out").exists() and not (retab_dir / "psa_initcam").exists()
