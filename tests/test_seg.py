"""The segmentation step (SPEC 7): the ResNet-38 + ASPP network, the loss ignoring 255, the two
label sources of mixed / full / weak supervision, exact resume, and inference at the input size."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import coded_image, copy_driver, stop_at
from retab import voc
from retab.data import SegTrainDataset
from retab.data import transforms as T
from retab.misc.errors import RetabError
from retab.voc import save_label_png
from retab.models import build_model
from retab.models.segmentation import ASPP_RATES, SegmentationNet, segmentation_loss
from retab.models.weights import save_checkpoint
from retab.optim import param_groups
from retab.stages import infer_seg, train_seg
from retab.engines.stage_support import load_initial_weights
from retab.stages.train_seg import gt_names_for

WIDTH = 0.0625


# ----------------------------------------------------------------------------- the network

def test_model_output_shape_keys_and_head_init():
    torch.manual_seed(0)
    model = build_model("seg", WIDTH)
    assert isinstance(model, SegmentationNet)
    model.eval()
    out = model(torch.randn(2, 3, 37, 53))
    assert out.shape == (2, 21, 5, 7)  # ceil(37/8), ceil(53/8)
    conv6 = model.feature_channels["conv6"]
    state = model.state_dict()
    head_keys = sorted(k for k in state if k.startswith("aspp."))
    assert head_keys == [f"aspp.{i}.{p}" for i in range(4) for p in ("bias", "weight")]
    for i, rate in enumerate(ASPP_RATES):
        branch = model.aspp[i]
        assert branch.dilation == (rate, rate) and branch.padding == (rate, rate)
        assert tuple(branch.weight.shape) == (21, conv6, 3, 3)
        assert torch.count_nonzero(branch.bias) == 0
        assert 0.005 < float(branch.weight.detach().std()) < 0.015  # normal(0, 0.01)
    # the head is the x10 / x20 group; frozen layers stay out of every group
    groups = param_groups(model)
    head_ids = {id(p) for p in model.aspp.parameters()}
    assert {id(p) for p in groups[2]} | {id(p) for p in groups[3]} == head_ids
    assert {id(p) for p in groups[3]} == {id(b.bias) for b in model.aspp}
    in_groups = {id(p) for g in groups for p in g}
    assert id(model.conv1a.weight) not in in_groups and id(model.b2_1.conv_branch2a.weight) not in in_groups
    assert not model.bn7.training  # BatchNorms stay frozen in train mode
    model.train()
    assert not model.bn7.training


def test_output_is_the_sum_of_the_four_dilated_branches():
    torch.manual_seed(1)
    model = build_model("seg", WIDTH).eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        conv6 = model.feature_dict(x)["conv6"]
        expected = sum(torch.nn.functional.conv2d(conv6, b.weight, b.bias, padding=r, dilation=r)
                       for b, r in zip(model.aspp, ASPP_RATES))
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_initial_weights_from_a_classifier_load_the_backbone_only(tmp_path):
    torch.manual_seed(2)
    cls = build_model("cls", WIDTH)
    save_checkpoint(tmp_path / "cls.pth", cls)
    torch.manual_seed(3)
    seg = build_model("seg", WIDTH)
    head_before = {k: v.clone() for k, v in seg.state_dict().items() if k.startswith("aspp.")}
    load_initial_weights(seg, tmp_path / "cls.pth")
    loaded, source = seg.state_dict(), cls.state_dict()
    assert all(torch.equal(loaded[k], source[k]) for k in source if k != "fc8.weight")
    assert all(torch.equal(loaded[k], v) for k, v in head_before.items())
    # a trained segmentation checkpoint loads strictly, head included
    save_checkpoint(tmp_path / "seg.pth", seg)
    again = build_model("seg", WIDTH)
    load_initial_weights(again, tmp_path / "seg.pth")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in loaded.items())


# ----------------------------------------------------------------------------- the loss

def test_loss_is_the_mean_cross_entropy_over_labelled_pixels():
    # Every logit 0 except one channel per pixel at ln 5: softmax denominator 20 + 5 = 25, so a
    # pixel labelled with that channel costs ln 25 - ln 5 = ln 5, any other label ln 25.
    logits = torch.zeros(1, 21, 2, 2)
    logits[0, 3, 0, 0] = logits[0, 7, 0, 1] = logits[0, 0, 1, 0] = logits[0, 20, 1, 1] = math.log(5)
    labels = torch.tensor([[[3, 0], [255, 255]]])
    assert segmentation_loss(logits, labels).item() == pytest.approx((math.log(5) + math.log(25)) / 2, rel=1e-6)
    # the ignored pixels' logits do not matter, nor do they receive gradient
    changed = logits.clone()
    changed[0, :, 1, :] = torch.randn(21, 2) * 10
    changed.requires_grad_(True)
    loss = segmentation_loss(changed, labels)
    assert loss.item() == pytest.approx((math.log(5) + math.log(25)) / 2, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(changed.grad[0, :, 1, :]) == 0
    # nothing labelled: zero loss and zero gradient instead of NaN
    empty = logits.clone().requires_grad_(True)
    loss = segmentation_loss(empty, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0 and torch.count_nonzero(empty.grad) == 0


def test_loss_upsamples_the_logit_grid_to_the_labels():
    # A spatially constant logit grid stays constant after bilinear upsampling.
    logits = torch.zeros(2, 21, 2, 3)
    logits[:, 5] = math.log(5)
    labels = torch.full((2, 16, 24), 5)
    labels[0, :8] = 1
    labels[1, :, :6] = 255
    # labelled 5: 8 x 24 pixels of image 0 and 16 x 18 of image 1 (ln 5 each); labelled 1: 8 x 24 (ln 25)
    expected = (480 * math.log(5) + 192 * math.log(25)) / 672
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- the two label sources

def write_image(root: Path, name: str, arr: np.ndarray) -> None:
    path = voc.image_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")  # lossless under the .jpg name


def halves(h: int, w: int, left: int, right: int) -> np.ndarray:
    labels = np.full((h, w), left, np.uint8)
    labels[:, w // 2:] = right
    return labels


@pytest.fixture()
def label_tree(tmp_path):
    """Fold 0: img_base's mask holds car (7, base), img_novel's bird (3, novel). Pseudo labels
    differ from both masks everywhere."""
    root = tmp_path / "VOC2012"
    pseudo = tmp_path / "pseudo"
    h, w = 16, 16
    for name, gt, fake in (("img_base", halves(h, w, 0, 7), halves(h, w, 9, 0)),
                           ("img_novel", halves(h, w, 3, 0), halves(h, w, 0, 4))):
        write_image(root, name, coded_image(h, w))
        gt[0] = 255  # an ignored row
        save_label_png(voc.mask_path(root, name), gt)
        save_label_png(pseudo / f"{name}.png", fake)
    return root, pseudo


def source_of(ds: SegTrainDataset, index: int, root: Path, pseudo: Path) -> str:
    """'gt' or 'pseudo': which file the sample's labels are (crop = image size, no rescale, so the
    labels are the file itself or its mirror)."""
    name = ds.names[index]
    _, labels = ds[index]
    labels = labels.numpy()
    for kind, path in (("gt", voc.mask_path(root, name)), ("pseudo", pseudo / f"{name}.png")):
        if path.is_file():
            src = voc.load_label_png(path)
            if np.array_equal(labels, src) or np.array_equal(labels, src[:, ::-1]):
                return kind
    raise AssertionError(f"labels of {name} match neither source")


@pytest.mark.parametrize("supervision, expected", [("mixed", ("gt", "pseudo")), ("full", ("gt", "gt")),
                                                   ("weak", ("pseudo", "pseudo"))])
def test_supervision_picks_the_label_source(label_tree, supervision, expected):
    root, pseudo = label_tree
    names = ["img_base", "img_novel"]
    assert voc.is_novel_mask(voc.load_label_png(voc.mask_path(root, "img_novel")), 0)
    gt_names = gt_names_for(supervision, names, base_names=["img_base"], novel_names=["img_novel"])
    ds = SegTrainDataset(names, root, gt_names, pseudo, crop_size=16, resize_long=None, jitter=T.NO_JITTER)
    flips = set()
    for seed in range(6):
        ds.seed = seed
        assert tuple(source_of(ds, i, root, pseudo) for i in range(2)) == expected
        image, labels = ds[0]
        assert image.shape == (3, 16, 16) and labels.dtype == torch.int64
        flips.add(int(labels[5, 0]))  # column 0 holds the left or the right half's label
    assert len(flips) == 2  # both orientations occur


def test_gt_names_need_each_name_in_exactly_one_fold_list():
    assert gt_names_for("mixed", ["a", "b"], ["a"], ["b"]) == {"a"}
    with pytest.raises(RetabError, match="neither"):
        gt_names_for("mixed", ["a", "c"], ["a"], ["b"])
    with pytest.raises(RetabError, match="both"):
        gt_names_for("mixed", ["a"], ["a"], ["a"])
    with pytest.raises(RetabError, match="supervision"):
        gt_names_for("semi", ["a"])


def test_missing_or_bad_pseudo_labels_name_the_file(label_tree):
    root, pseudo = label_tree
    (pseudo / "img_base.png").unlink()  # a base sample in mixed supervision needs none
    SegTrainDataset(["img_base", "img_novel"], root, {"img_base"}, pseudo, crop_size=16)
    with pytest.raises(RetabError, match=r"pseudo[/\\]img_base\.png: pseudo label of img_base not found"):
        SegTrainDataset(["img_base", "img_novel"], root, set(), pseudo, crop_size=16)
    save_label_png(pseudo / "img_novel.png", np.full((16, 16), 30, np.uint8))
    with pytest.raises(RetabError, match=r"img_novel\.png: unknown label values \[30\]"):
        SegTrainDataset(["img_novel"], root, set(), pseudo, crop_size=16)  # checked before any training
    save_label_png(pseudo / "img_novel.png", np.zeros((16, 15), np.uint8))
    ds = SegTrainDataset(["img_novel"], root, set(), pseudo, crop_size=16)
    with pytest.raises(RetabError, match=r"img_novel\.png: label map is 15x16 but the image is 16x16"):
        ds[0]


def test_random_scale_and_crop_padding(label_tree):
    root, pseudo = label_tree
    gt = voc.load_label_png(voc.mask_path(root, "img_base"))
    # long side 24: the 16x16 image becomes 24x24, labels nearest-resized; a 40 crop pads with 255
    ds = SegTrainDataset(["img_base"], root, {"img_base"}, None, crop_size=40, resize_long=(24, 24),
                         jitter=T.NO_JITTER)
    resized = T.nearest_resize(gt, 24, 24)
    black = T.normalize_image(np.zeros((1, 1, 3), np.uint8))[0, 0]  # the image canvas, normalised
    for seed in range(4):
        ds.seed = seed
        image, labels = ds[0]
        labels = labels.numpy()
        canvas = np.all(np.isclose(image.numpy(), black[:, None, None]), axis=0)  # the image is never black
        rows, cols = np.nonzero(~canvas)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        assert (~canvas).sum() == 24 * 24 and labels[box].shape == (24, 24)
        assert np.array_equal(labels[box], resized) or np.array_equal(labels[box], resized[:, ::-1])
        assert np.all(labels[canvas] == 255)


# ----------------------------------------------------------------------------- training and resume

@pytest.fixture()
def train_tree(tmp_path):
    root = tmp_path / "VOC2012"
    pseudo = tmp_path / "pseudo"
    rng = np.random.default_rng(0)
    names = [f"2008_00000{i}" for i in range(4)]
    for i, name in enumerate(names):
        write_image(root, name, rng.integers(0, 255, (30, 36, 3), dtype=np.uint8))
        gt = halves(30, 36, 0, [7, 3, 12, 3][i])
        save_label_png(voc.mask_path(root, name), gt)
        save_label_png(pseudo / f"{name}.png", np.where(gt > 0, gt, 255).astype(np.uint8))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_aug.txt").write_text("".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n"
                                                 for n in names))
    (lists / "base.txt").write_text(f"{names[0]}\n{names[2]}\n")
    np.save(lists / "novel.npy", np.array([names[1], names[3]]))
    return root, pseudo, lists


def train_argv(root, pseudo, lists, out_dir, *extra):
    return ["--fold", "0", "--supervision", "mixed", "--voc12_root", str(root),
            "--train_list", str(lists / "train_aug.txt"), "--base_list", str(lists / "base.txt"),
            "--novel_list", str(lists / "novel.npy"), "--pseudo_dir", str(pseudo),
            "--batch_size", "2", "--max_epoches", "2", "--lr", "0.001", "--crop_size", "24",
            "--resize_long", "24", "40", "--session_name", "seg", "--out_dir", str(out_dir),
            "--tblog_dir", "", "--num_workers", "0", "--device", "cpu", "--seed", "5",
            "--width", str(WIDTH), *extra]


@pytest.mark.slow
def test_resume_continues_from_the_saved_step_with_the_same_lr(train_tree, tmp_path, monkeypatch):
    root, pseudo, lists = train_tree
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert train_seg.main(train_argv(root, pseudo, lists, straight)) == 0

    real_step = train_seg.seg_step
    # stopped at the first step of epoch 2 (2 steps per epoch)
    monkeypatch.setattr(train_seg, "seg_step", stop_at(real_step, [], stop_call=2))
    with pytest.raises(KeyboardInterrupt):
        train_seg.main(train_argv(root, pseudo, lists, interrupted))
    assert not (interrupted / "seg.pth").exists()
    saved = torch.load(interrupted / "seg.last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["optimizer"]["poly"]["global_step"] == 2

    monkeypatch.setattr(train_seg, "seg_step", real_step)
    assert train_seg.main(train_argv(root, pseudo, lists, interrupted, "--resume")) == 0
    a = torch.load(straight / "seg.pth", weights_only=True)
    b = torch.load(interrupted / "seg.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last_a = torch.load(straight / "seg.last.pt", weights_only=True)["optimizer"]
    last_b = torch.load(interrupted / "seg.last.pt", weights_only=True)["optimizer"]
    assert last_a["poly"] == last_b["poly"] and last_a["poly"]["global_step"] == 4
    assert [g["lr"] for g in last_a["param_groups"]] == [g["lr"] for g in last_b["param_groups"]]
    # and training did move the weights
    init = build_model("seg", WIDTH).state_dict()
    assert not torch.equal(a["aspp.0.weight"], init["aspp.0.weight"])


def test_training_refuses_a_missing_pseudo_label(train_tree, tmp_path):
    root, pseudo, lists = train_tree
    (pseudo / "2008_000001.png").unlink()  # a novel sample
    with pytest.raises(RetabError, match=r"2008_000001\.png: pseudo label of 2008_000001 not found"):
        train_seg.main(train_argv(root, pseudo, lists, tmp_path / "out"))
    # full supervision needs no pseudo labels at all
    argv = train_argv(root, tmp_path / "nowhere", lists, tmp_path / "out", "--max_epoches", "1")
    argv[argv.index("mixed")] = "full"
    assert train_seg.main(argv) == 0


# ----------------------------------------------------------------------------- inference

def test_inference_writes_label_pngs_of_the_input_size(tmp_path):
    root = tmp_path / "VOC2012"
    rng = np.random.default_rng(1)
    sizes = {"odd_a": (37, 53), "odd_b": (53, 37)}
    for name, (h, w) in sizes.items():
        write_image(root, name, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (tmp_path / "list.txt").write_text("odd_a\nodd_b\n")
    torch.manual_seed(4)
    model = build_model("seg", WIDTH)
    with torch.no_grad():  # a head that prefers several labels somewhere
        for branch in model.aspp:
            branch.bias.copy_(torch.randn(21) * 0.05)
    save_checkpoint(tmp_path / "seg.pth", model)
    model.eval()

    def infer(out, crf, *extra):
        return infer_seg.main(["--weights", str(tmp_path / "seg.pth"), "--infer_list", str(tmp_path / "list.txt"),
                               "--voc12_root", str(root), "--scales", "1.0", "0.5", "1.5", "--flip", "True",
                               "--crf", str(crf), "--out_dir", str(out), "--num_workers", "0",
                               "--device", "cpu", "--width", str(WIDTH), *extra])

    for crf in (False, True):
        out = tmp_path / f"pred_crf{crf}"
        assert infer(out, crf) == 0
        for name, (h, w) in sizes.items():
            with Image.open(out / f"{name}.png") as png:
                assert png.mode == "P" and png.size == (w, h)
                stored = np.array(png)
            img = voc.load_image(voc.image_path(root, name))
            probs = infer_seg.multiscale_probabilities(model, img, (1.0, 0.5, 1.5), True)
            assert probs.shape == (21, h, w)
            np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
            np.testing.assert_array_equal(stored, infer_seg.predict_labels(probs, img, crf))
            assert stored.max() <= 20

    # an existing PNG is kept unless --overwrite
    out = tmp_path / "pred_crfFalse"
    computed = voc.load_label_png(out / "odd_a.png")
    marker = np.full((37, 53), 20, np.uint8)
    assert not np.array_equal(computed, marker)
    save_label_png(out / "odd_a.png", marker)
    assert infer(out, False) == 0
    assert np.array_equal(voc.load_label_png(out / "odd_a.png"), marker)
    assert infer(out, False, "--overwrite") == 0
    assert np.array_equal(voc.load_label_png(out / "odd_a.png"), computed)


def test_flip_averaging_is_mirror_equivariant():
    torch.manual_seed(6)
    model = build_model("seg", WIDTH).eval()
    arr = np.random.default_rng(2).integers(0, 255, (29, 43, 3), dtype=np.uint8)
    img, mirrored = Image.fromarray(arr), Image.fromarray(np.ascontiguousarray(arr[:, ::-1]))
    probs = infer_seg.multiscale_probabilities(model, img, (1.0,), flip=True)
    probs_mirrored = infer_seg.multiscale_probabilities(model, mirrored, (1.0,), flip=True)
    np.testing.assert_allclose(probs_mirrored, probs[:, :, ::-1], atol=1e-6)
    single = infer_seg.multiscale_probabilities(model, img, (1.0,), flip=False)
    assert not np.allclose(single, probs, atol=1e-6)


# ----------------------------------------------------------------------------- seg/run_seg.sh

def build_mini_tree(root: Path) -> list[str]:
    """8 images 40x48 with one rectangle each (fold 0: labels 1..5 novel), XMLs, both mask folders
    (2-pixel 255 band), train/val lists; returns the train_aug names."""
    rng = np.random.default_rng(3)
    classes = [1, 7, 12, 3, 15, 9, 7, 2]
    names = [f"2009_00000{i}" for i in range(len(classes))]
    for name, label in zip(names, classes):
        image = rng.integers(90, 130, (40, 48, 3)).astype(np.uint8)
        image[10:30, 12:36] = np.array(voc.voc_palette()[3 * label:3 * label + 3]) // 2 + 60
        mask = np.zeros((40, 48), np.uint8)
        mask[10:30, 12:36] = 255
        mask[12:28, 14:34] = label
        write_image(root, name, image)
        for aug in (True, False):
            save_label_png(voc.mask_path(root, name, aug=aug), mask)
        voc.xml_path(root, name).parent.mkdir(parents=True, exist_ok=True)
        voc.xml_path(root, name).write_text(
            f"<annotation><object><name>{voc.CATEGORIES[label - 1]}</name></object></annotation>")
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("".join(n + "\n" for n in names[:3]))
    (lists / "val.txt").write_text("".join(n + "\n" for n in names[6:]))
    return names[:6]


@pytest.mark.slow
def test_run_seg_sh_trains_infers_and_evaluates(tmp_path):
    voc_root = tmp_path / "VOC2012"
    train_names = build_mini_tree(voc_root)
    pseudo = tmp_path / "pseudo"
    for name in train_names:  # pseudo labels: everything background
        save_label_png(pseudo / f"{name}.png", np.zeros((40, 48), np.uint8))
    seg_dir = copy_driver("seg", tmp_path)
    env = dict(os.environ, PYTHON=sys.executable, VOC12HOME=str(voc_root), PSEUDO_DIR=str(pseudo), FOLD="0",
               DEVICE="cpu", WIDTH=str(WIDTH), WEIGHTS="", CROP_SIZE="32", RESIZE_LONG="40 56", BATCH_SIZE="3",
               SEG_EPOCHS="1", SEG_LR="0.01", SCALES="1.0", NUM_WORKERS="0",
               RETAB_STEP="left_in_the_shell")  # each step names itself: a caller's name is not used

    def run():
        proc = subprocess.run(["sh", "run_seg.sh"], cwd=seg_dir, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "left_in_the_shell" not in proc.stdout
        return proc

    run()
    out = seg_dir / "out" / "fold0_mixed"
    assert (out / "res38_seg.pth").is_file() and (out / "res38_seg.last.pt").is_file()
    for name in ("2009_000006", "2009_000007"):
        with Image.open(out / "pred_val" / f"{name}.png") as png:
            assert png.size == (48, 40) and png.mode == "P"
    log_lines = (out / "evallog.txt").read_text().splitlines()
    assert "seg mixed fold 0 (val)" in log_lines[0]
    assert re.fullmatch(r"\d+\.\d\d/\d+\.\d\d/\d+\.\d\d", log_lines[2])
    steps = [line.split("\t")[0] for line in (out / "timings.tsv").read_text().splitlines()]
    assert steps == ["dataset", "train_seg", "infer_seg", "eval_seg"]
    # a rerun keeps the trained net and the existing predictions
    stamp = (out / "res38_seg.pth").stat().st_mtime_ns
    times_before = dict(line.split("\t") for line in (out / "timings.tsv").read_text().splitlines())
    proc = run()
    assert "res38_seg.pth exists: trained already" in proc.stdout + proc.stderr
    assert (out / "res38_seg.pth").stat().st_mtime_ns == stamp
    assert re.findall(r"^\[(\w+)\] nothing to do", proc.stdout, re.M) == ["dataset", "train_seg", "infer_seg"]
    assert re.findall(r"^\[(\w+)\] done", proc.stdout, re.M) == ["eval_seg"]
    times = dict(line.split("\t") for line in (out / "timings.tsv").read_text().splitlines())
    assert list(times) == ["dataset", "train_seg", "infer_seg", "eval_seg"]  # the skipped steps stay
    assert {k: times[k] for k in times if k != "eval_seg"} == {k: times_before[k] for k in times if k != "eval_seg"}
    # a missing pseudo folder is a clear error
    env["PSEUDO_DIR"] = str(tmp_path / "nowhere")
    env["OUT"] = "out/other"
    proc = subprocess.run(["sh", "run_seg.sh"], cwd=seg_dir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "PSEUDO_DIR" in proc.stderr and "nowhere" in proc.stderr


def test_default_fold_lists_read_the_npy_when_the_txt_is_absent(tmp_path, monkeypatch):
    # train_seg's default lists are voc12/trainaug_fold{F}_{part}.txt, else the .npy beside it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "voc12").mkdir()
    np.save(tmp_path / "voc12" / "trainaug_fold2_base.npy", np.array(["2007_000032", "2007_000039"]))
    assert train_seg.fold_names(None, 2, "base") == ["2007_000032", "2007_000039"]
    with pytest.raises(RetabError, match=r"trainaug_fold2_novel\.txt: fold 2 novel list not found"):
        train_seg.fold_names(None, 2, "novel")
