"""Untrusted inputs (issue 24): nothing in a file is run, nothing mislabelled in silence, no output
overwrites an input, bad settings are refused before any work, resume names a mismatch, .params
headers are checked against the file. Every refusal is one line naming the file or setting."""
from __future__ import annotations

import collections
import os
import pickle
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from retab import voc
from retab.cli import main as cli_main
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_npy
from retab.voc import save_label_png
from retab.misc.outputs import check_writable
from retab.misc.safe_pickle import load_npy
from retab.optim import make_optimizer, param_groups
from retab.stages.convert_cams import load_irn_dict
from retab.data.datasets import load_score_stack
from retab.models import BACKBONES, build_model
from retab.models.weights import load_state_dict_checked, load_weights, save_checkpoint
from retab.engines.driver_settings import check_driver_settings
from retab.engines.training import TrainConfig, get_rng_state, set_rng_state, train
from helpers import copy_driver, stop_at
from test_retab_stages import (TRAIN_AUG, WIDTH, build_tiny_tree, size_of, stripes,
                               walk_args, write_targets)


class RunsCommand:
    """Unpickling this object runs a shell command that creates `marker`: what a hostile file does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def one_error_line(capsys) -> str:
    """The CLI's error line: exactly one, no traceback (progress bars may precede it on stderr)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# ----------------------------------------------------------------------------- 1. nothing is run

@pytest.mark.parametrize("route", ["score dict", "cls_labels", "name list", "IRN file"])
def test_a_pickle_that_calls_a_function_is_refused_before_anything_runs(tmp_path, route):
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.npy"
    save_npy(path, {0: RunsCommand(marker)} if route != "name list" else {"x": RunsCommand(marker)})
    if route == "name list":  # an object array of names, as published fold lists may be
        save_npy(path, np.array(["2007_000032", RunsCommand(marker)], dtype=object))
    read = {"score dict": load_score_dict, "cls_labels": voc.load_cls_labels,
            "name list": voc.read_name_list, "IRN file": load_irn_dict}[route]
    with pytest.raises(RetabError) as info:
        read(path)
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "posix.system" in message and "nothing in it was run" in message


def test_cli_refuses_a_hostile_dict_in_one_line_and_writes_nothing(tmp_path, capsys):
    marker = tmp_path / "ran"
    save_npy(tmp_path / "irn" / "a.npy", {"keys": np.array([1]), "high_res": RunsCommand(marker)})
    rc = cli_main(["convert_cams", "--format", "irn", "--in_dir", str(tmp_path / "irn"),
                   "--out_dir", str(tmp_path / "cams")])
    assert rc == 2 and not marker.exists()
    assert "refused" in one_error_line(capsys)
    assert not (tmp_path / "cams" / "a.npy").exists()


def test_the_published_pickled_formats_still_read(tmp_path):
    rng = np.random.default_rng(0)
    cams = {3: rng.random((5, 7), dtype=np.float32), 14: rng.random((5, 7), dtype=np.float32)}
    # as PSA wrote them: np.save of a dict (numpy pickles it), and the same with protocol 2 (Python 2 era)
    np.save(tmp_path / "cam.npy", cams)
    with open(tmp_path / "cam_p2.npy", "wb") as fp:
        np.lib.format.write_array_header_1_0(fp, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(cams, dtype=object), fp, protocol=2)
    for name in ("cam.npy", "cam_p2.npy"):
        loaded = load_score_dict(tmp_path / name)
        assert sorted(loaded) == [3, 14] and all(np.array_equal(loaded[k], cams[k]) for k in cams)
    labels = collections.OrderedDict([("2007_000032", np.eye(20, dtype=np.float32)[0]), ("2007_000039", np.float32(1))])
    np.save(tmp_path / "cls.npy", {"a": labels["2007_000032"], "n": np.int64(3), "t": (1, 2.5, "x", None, True)})
    other = load_npy(tmp_path / "cls.npy", "test dict").item()
    assert other["n"] == 3 and other["t"] == (1, 2.5, "x", None, True)
    np.save(tmp_path / "names.npy", np.array(["2007_000032", "2007_000039"], dtype=object))
    assert voc.read_name_list(tmp_path / "names.npy") == ["2007_000032", "2007_000039"]
    np.save(tmp_path / "plain.npy", np.arange(6, dtype=np.float32))  # no pickle at all
    assert np.array_equal(load_npy(tmp_path / "plain.npy", "array"), np.arange(6, dtype=np.float32))


def test_a_file_that_is_not_npy_is_named(tmp_path):
    (tmp_path / "x.npy").write_bytes(pickle.dumps({0: np.zeros(2)}))  # a bare pickle, no .npy header
    with pytest.raises(RetabError, match="not a readable .npy score dict"):
        load_score_dict(tmp_path / "x.npy")


# ----------------------------------------------------------------------------- a tiny training, for resume

class TinyNet(nn.Module):
    """A network with a backbone conv and a head (fc8), enough for the optimizer's four groups."""

    def __init__(self, width: float = 1.0, channels: int = 4):
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.fc8 = nn.Conv2d(channels, 2, 1, bias=False)

    def forward(self, x):
        return self.fc8(torch.relu(self.conv(x))).mean(dim=(2, 3))


def tiny_step(model, batch, device):
    x, y = batch
    return nn.functional.mse_loss(model(x.to(device)), y.to(device)), {}


def run_tiny(out: Path, *, epochs: int = 2, resume: bool = False, optimizer: str = "sgd", channels: int = 4,
             lr: float = 0.1, momentum=None, width: float = 1.0, step=tiny_step) -> nn.Module:
    """Train TinyNet on 4 fixed samples, batch 2 (2 steps per epoch); returns the model."""
    torch.manual_seed(0)
    model = TinyNet(width=width, channels=channels)
    data = torch.utils.data.TensorDataset(torch.rand(4, 3, 8, 8), torch.rand(4, 2))
    cfg = TrainConfig(session_name="tiny", max_epoches=epochs, batch_size=2, out_dir=str(out), tblog_dir=None,
                      resume=resume)
    opt = make_optimizer(optimizer, param_groups(model), lr=lr, weight_decay=5e-4, max_step=2 * epochs,
                         momentum=momentum)
    train(model, opt, data, step, cfg, torch.device("cpu"))
    return model


def interrupted_after_one_epoch(out: Path, **kwargs) -> None:
    """A run stopped at the first step of its second epoch: it leaves tiny.last.pt of epoch 1."""
    with pytest.raises(KeyboardInterrupt):
        run_tiny(out, resume=True, step=stop_at(tiny_step, [], stop_call=2), **kwargs)
    assert (out / "tiny.last.pt").is_file() and not (out / "tiny.pth").exists()


def test_resume_checkpoints_load_with_weights_only(tmp_path):
    interrupted_after_one_epoch(tmp_path)
    state = torch.load(tmp_path / "tiny.last.pt", weights_only=True)  # raises if anything needs full unpickling
    assert state["epoch"] == 1 and state["network"] == "TinyNet" and state["optimizer_kind"] == "PolyOptimizer"


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    random.gauss(0, 1)  # a cached Gaussian in Python's generator
    np.random.standard_normal()  # and in numpy's
    torch.save(get_rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.random(3).tolist(), np.random.standard_normal(),
                torch.rand(3).tolist())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), random.gauss(0, 1), np.random.random(3).tolist(), np.random.standard_normal(),
            torch.rand(3).tolist()) == expected


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": TinyNet().state_dict(), "optimizer": {}, "epoch": 1, "rng": RunsCommand(marker)},
               tmp_path / "tiny.last.pt")
    with pytest.raises(RetabError, match="tiny.last.pt: cannot resume from it: not a readable checkpoint"):
        run_tiny(tmp_path, resume=True)
    assert not marker.exists() and not (tmp_path / "tiny.pth").exists()


def test_resume_after_an_interruption_is_exact(tmp_path):
    straight = run_tiny(tmp_path / "a")
    interrupted_after_one_epoch(tmp_path / "b")
    resumed = run_tiny(tmp_path / "b", resume=True)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- the tiny VOC tree of test_retab_stages

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny VOC tree with its lists, fabricated PSA outputs (CAM and CRF dicts, a classifier)
    and random affinity / boundary nets, as test_retab_stages builds it."""
    tree = build_tiny_tree(tmp_path_factory.mktemp("untrusted"))
    out = tree["psa"] / "out"
    return {**tree, "cams": out / "psa_trainaug_cam", "la": out / "psa_trainaug_crf_4.0",
            "ha": out / "psa_trainaug_crf_32.0"}


def copy_dicts(src: Path, dst: Path, names, change=None) -> Path:
    """Score dicts of `names` copied from src to dst, each passed through change(name, dict) if given."""
    for name in names:
        scores = load_score_dict(src / f"{name}.npy")
        save_npy(dst / f"{name}.npy", change(name, scores) if change else scores)
    return dst


def list_file(path: Path, names) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(n + "\n" for n in names))
    return path


def infer_cls_args(tiny, out: Path, names, weights) -> list[str]:
    return ["infer_cls", "--weights", str(weights), "--width", str(WIDTH), "--voc12_root", str(tiny["voc"]),
            "--infer_list", str(list_file(out / "list.txt", names)), "--out_cam", str(out / "cam"),
            "--out_cam_pred", str(out / "pred"), "--scales", "1.0", "--crf_workers", "0", "--device", "cpu",
            "--num_workers", "0"]


# ----------------------------------------------------------------------------- 3. NaN

def test_non_finite_weights_are_refused_when_loading(tmp_path):
    model = build_model("cls", WIDTH)
    state = model.state_dict()
    state["b4_2.conv_branch2a.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(RetabError, match=r"nan.pth: tensor b4_2.conv_branch2a.weight holds 1 NaN or infinite"):
        load_weights(build_model("cls", WIDTH), tmp_path / "nan.pth", strict=True)
    # the MXNet reader hands numpy arrays to the same check
    arrays = {"conv1a.weight": np.full(tuple(state["conv1a.weight"].shape), np.inf, np.float32)}
    with pytest.raises(RetabError, match="imagenet.params: tensor conv1a.weight holds"):
        load_state_dict_checked(build_model("cls", WIDTH), arrays, strict=False, source="imagenet.params")


def test_infer_cls_with_nan_weights_fails_in_one_line_before_any_output(tiny, tmp_path, capsys):
    state = torch.load(tiny["psa"] / "best" / "res38_cls.pth", weights_only=True)
    state["fc8.weight"][3] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    assert cli_main(infer_cls_args(tiny, tmp_path, TRAIN_AUG[:2], tmp_path / "nan.pth")) == 2
    assert "fc8.weight holds" in one_error_line(capsys)
    assert not (tmp_path / "cam").exists() and not (tmp_path / "pred").exists()


def test_infer_cls_refuses_non_finite_cams_of_a_picture(tiny, tmp_path, capsys, monkeypatch):
    from retab.stages import infer_cls

    def nan_cams(cam_fn, img, labels, scales, device):
        present = np.flatnonzero(np.asarray(labels))
        return {int(k): np.full((img.height, img.width), np.nan, np.float32) for k in present}

    monkeypatch.setattr(infer_cls, "multiscale_cam", nan_cams)
    name = TRAIN_AUG[0]
    assert cli_main(infer_cls_args(tiny, tmp_path, [name], tiny["psa"] / "best" / "res38_cls.pth")) == 2
    err = one_error_line(capsys)
    assert f"{name}: the classifier's CAM of class 0 holds NaN" in err
    assert not (tmp_path / "cam" / f"{name}.npy").exists() and not (tmp_path / "pred" / f"{name}.png").exists()


def test_walk_refuses_non_finite_features_and_score_maps(tiny, tmp_path, capsys, monkeypatch):
    from retab.engines import walk_inference

    names = TRAIN_AUG[:2]
    targets = write_targets(tmp_path / "targets", names, stripes)
    # a NaN in one CAM map: the file and its class are named, nothing is written for it
    nan_cams = copy_dicts(tiny["cams"], tmp_path / "nan_cams", names,
                          lambda name, d: {k: np.where(np.arange(v.size).reshape(v.shape) == 7, np.nan, v)
                                           .astype(np.float32) for k, v in d.items()})
    assert cli_main(walk_args(tiny, "stage1", nan_cams, targets, tmp_path / "a", names)) == 2
    err = one_error_line(capsys)
    assert str(nan_cams / f"{names[0]}.npy") in err and "NaN or infinite" in err
    assert not (tmp_path / "a" / "rw_stage1").exists()
    # the affinity net's features of a picture: named, nothing written for it
    real = walk_inference.affinity_features
    monkeypatch.setattr(walk_inference, "affinity_features", lambda *a: real(*a) * float("inf") * 0)
    assert cli_main(walk_args(tiny, "stage1", tiny["cams"], targets, tmp_path / "b", names)) == 2
    assert f"{names[0]}: the affinity net's features hold NaN" in one_error_line(capsys)
    assert not (tmp_path / "b" / "rw_stage1").exists()


def test_affinity_training_refuses_a_crf_dict_holding_nan(tiny, tmp_path):
    name = TRAIN_AUG[0]
    bad = copy_dicts(tiny["la"], tmp_path / "la", [name],
                     lambda n, d: {k: np.full_like(v, np.nan) if k == 0 else v for k, v in d.items()})
    with pytest.raises(RetabError, match=r"la/2007_000001.npy: map 0 holds NaN"):
        load_score_stack(bad / f"{name}.npy", size_of(name))


@pytest.mark.parametrize("stage", ["prop_boundary_target", "infer_seg"])
def test_per_picture_nets_refuse_a_non_finite_output(tiny, tmp_path, capsys, monkeypatch, stage):
    from retab.stages import infer_seg, prop_boundary_target

    name = TRAIN_AUG[0]
    names = list_file(tmp_path / "list.txt", [name])
    common = ["--voc12_root", str(tiny["voc"]), "--infer_list", str(names), "--out_dir", str(tmp_path / "out"),
              "--width", str(WIDTH), "--device", "cpu", "--num_workers", "0"]
    if stage == "prop_boundary_target":
        monkeypatch.setattr(prop_boundary_target, "boundary_probability",
                            lambda model, img, device: torch.full((img.height, img.width), float("nan")))
        argv = [stage, "--weights", str(tiny["tmp"] / "boundary.pth"), *common]
    else:
        torch.manual_seed(3)
        save_checkpoint(tmp_path / "seg.pth", build_model("seg", WIDTH))
        monkeypatch.setattr(infer_seg, "multiscale_probabilities",
                            lambda model, img, *a: np.full((21, img.height, img.width), np.inf, np.float32))
        argv = [stage, "--weights", str(tmp_path / "seg.pth"), "--scales", "1.0", *common]
    assert cli_main(argv) == 2
    assert f"{name}: the " in one_error_line(capsys)
    assert not (tmp_path / "out" / f"{name}.png").exists()


# ----------------------------------------------------------------------------- 4. an output that is an input

def mtimes(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_walk_refuses_an_output_folder_that_is_or_links_to_an_input(tiny, tmp_path, capsys):
    names = TRAIN_AUG[:2]
    targets = write_targets(tmp_path / "targets", names, stripes)
    cams = copy_dicts(tiny["cams"], tmp_path / "cams", names)
    before = mtimes(cams), mtimes(targets)
    (tmp_path / "link").symlink_to(cams)
    base = walk_args(tiny, "stage1", cams, targets, tmp_path / "o", names)
    cases = [("--out_rw_cam", str(cams), "is the input folder --cam_dir"),
             ("--out_rw_cam", str(tmp_path / "link"), f"is the input folder --cam_dir {cams}"),
             ("--out_rw", str(targets), "is the input folder --targetpixel_dir"),
             ("--out_rw", str(tiny["voc"] / "SegmentationClassAug"), "SegmentationClassAug"),
             ("--out_rw", str(tmp_path / "o" / "cam_stage1"), "cam_stage1 is also the output folder --out_rw:")]
    for flag, folder, message in cases:
        argv = list(base)
        argv[argv.index(flag) + 1] = folder
        assert cli_main(argv) == 2
        err = one_error_line(capsys)
        assert message in err, err
    assert (mtimes(cams), mtimes(targets)) == before
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["list.txt"]  # walk_args's list only


def test_infer_cls_refuses_two_outputs_in_one_folder(tiny, tmp_path, capsys):
    argv = infer_cls_args(tiny, tmp_path, TRAIN_AUG[:1], tiny["psa"] / "best" / "res38_cls.pth")
    argv += ["--out_la_crf", str(tmp_path / "cam")]  # the --out_cam folder
    assert cli_main(argv) == 2
    assert f"--out_la_crf {tmp_path / 'cam'} is also the output folder --out_cam" in one_error_line(capsys)
    assert not (tmp_path / "cam").exists()


def test_training_refuses_a_checkpoint_folder_that_is_an_input(tiny, tmp_path, capsys):
    la = copy_dicts(tiny["la"], tmp_path / "la", TRAIN_AUG)
    before = mtimes(la)
    argv = ["train_aff", "--voc12_root", str(tiny["voc"]), "--train_list", str(tiny["lists"] / "train_aug.txt"),
            "--la_crf_dir", str(la), "--ha_crf_dir", str(tiny["ha"]), "--out_dir", str(la), "--tblog_dir", "",
            "--crop_size", "72", "--batch_size", "2", "--max_epoches", "1", "--width", str(WIDTH),
            "--device", "cpu", "--num_workers", "0"]
    assert cli_main(argv) == 2
    assert f"--out_dir {la} is the input folder --la_crf_dir" in one_error_line(capsys)
    assert mtimes(la) == before


def test_convert_cams_refuses_an_output_that_links_to_its_input(tmp_path, capsys):
    save_npy(tmp_path / "irn" / "a.npy", {"keys": np.array([1]), "high_res": np.zeros((1, 4, 4), np.float32)})
    (tmp_path / "out").symlink_to(tmp_path / "irn")
    assert cli_main(["convert_cams", "--format", "irn", "--in_dir", str(tmp_path / "irn"),
                     "--out_dir", str(tmp_path / "out")]) == 2
    assert "is the input folder --in_dir" in one_error_line(capsys)


# ----------------------------------------------------------------------------- 2. the label space of score dicts

def shifted(name, scores):
    """A CAM dict written in the format with background (what a stage-1 output or a CRF dict looks like)."""
    return {0: np.zeros_like(next(iter(scores.values()))), **{k + 1: v for k, v in scores.items()}}


@pytest.mark.parametrize("stage, change, looks", [
    ("stage1", shifted, "look like a dict with background"),
    ("stage2", None, "look like a CAM dict"),
    ("stage1", lambda name, d: {k + 2 if k < 17 else k - 2: v for k, v in d.items()}, "neither format"),
])
def test_walks_refuse_dicts_of_the_other_label_space(tiny, tmp_path, capsys, stage, change, looks):
    names = TRAIN_AUG[:2]
    targets = write_targets(tmp_path / "targets", names, stripes)
    dicts = copy_dicts(tiny["cams"], tmp_path / "in", names, change)
    assert cli_main(walk_args(tiny, stage, dicts, targets, tmp_path / "o", names)) == 2
    err = one_error_line(capsys)
    assert str(dicts / f"{names[0]}.npy") in err and looks in err and "(classes: aeroplane)" in err
    assert not (tmp_path / "o" / f"rw_{stage}").exists()


def test_psa_walk_refuses_crf_dicts_given_as_cams(tiny, tmp_path, capsys):
    name = "2007_000002"  # car and person: keys 6, 14 as a CAM dict, 0, 7, 15 as a CRF dict
    argv = ["infer_aff", "--weights", str(tiny["tmp"] / "aff.pth"), "--width", str(WIDTH), "--voc12_root",
            str(tiny["voc"]), "--infer_list", str(list_file(tmp_path / "l.txt", [name])), "--cam_dir", str(tiny["la"]),
            "--out_rw", str(tmp_path / "rw"), "--device", "cpu", "--num_workers", "0"]
    assert cli_main(argv) == 2
    err = one_error_line(capsys)
    assert "keys [0, 7, 15] look like a dict with background" in err and "keys [6, 14] for this picture" in err
    assert not (tmp_path / "rw").exists()


def test_cams_that_are_not_max_normalised_point_to_convert_cams(tiny, tmp_path, capsys):
    name = TRAIN_AUG[0]
    targets = write_targets(tmp_path / "targets", [name], stripes)
    raw = copy_dicts(tiny["cams"], tmp_path / "raw", [name], lambda n, d: {k: 3 * v for k, v in d.items()})
    assert cli_main(walk_args(tiny, "stage1", raw, targets, tmp_path / "a", [name])) == 2
    err = one_error_line(capsys)
    assert "the CAM of class 0 peaks at 3" in err and "retab convert_cams --format cam_dict" in err
    assert cli_main(["convert_cams", "--format", "cam_dict", "--in_dir", str(raw), "--out_dir", str(tmp_path / "norm"),
                     "--voc12_root", str(tiny["voc"])]) == 0
    normalised = load_score_dict(tmp_path / "norm" / f"{name}.npy")
    assert 0.999 < max(float(v.max()) for v in normalised.values()) < 1
    assert cli_main(walk_args(tiny, "stage1", tmp_path / "norm", targets, tmp_path / "b", [name])) == 0


def test_affinity_training_refuses_crf_dicts_of_the_cam_format(tiny, tmp_path):
    name = "2007_000002"
    crf = load_score_dict(tiny["la"] / f"{name}.npy")
    assert sorted(crf) == [0, 7, 15]
    load_score_stack(tiny["la"] / f"{name}.npy", size_of(name), np.isin(np.arange(20), [6, 14]).astype(np.float32))
    as_cams = copy_dicts(tiny["cams"], tmp_path / "cams", [name])
    with pytest.raises(RetabError, match=r"keys \[6, 14\] look like a CAM dict .* but the affinity training"):
        load_score_stack(as_cams / f"{name}.npy", size_of(name), np.isin(np.arange(20), [6, 14]).astype(np.float32))


def test_evaluation_npy_new_refuses_cam_dicts(tiny, tmp_path, capsys):
    names = list_file(tmp_path / "l.txt", ["2007_000002"])
    assert cli_main(["evaluation_boundary", "--list", str(names), "--predict_dir", str(tiny["cams"]), "--gt_dir",
                     str(tiny["voc"] / "SegmentationClassAug"), "--logfile", str(tmp_path / "log.txt"), "--comment",
                     "x", "--type", "npy_new", "--t", "0.2", "--fold", "0", "--workers", "1"]) == 2
    assert "hold no background key 0: they look like a CAM dict" in one_error_line(capsys)
    assert not (tmp_path / "log.txt").exists()


# ----------------------------------------------------------------------------- 5. one GT mask check for every stage

@pytest.mark.parametrize("stage", ["train_boundary", "train_affmixed_boundary", "train_seg", "evaluation_boundary",
                                   "make_splits"])
def test_every_stage_refuses_a_mask_value_that_is_no_label(tiny, tmp_path, capsys, stage):
    voc_root = tmp_path / "VOC2012"
    shutil.copytree(tiny["voc"], voc_root)
    name = "2007_000003"  # a base sample of fold 0 (dog), in train.txt
    mask_path = voc.mask_path(voc_root, name)
    mask = voc.load_label_png(mask_path)
    mask[5, 5] = 37
    for aug in (True, False):
        save_label_png(voc.mask_path(voc_root, name, aug=aug), mask)
    lists = tiny["lists"]
    out = tmp_path / "out"
    training = ["--voc12_root", str(voc_root), "--out_dir", str(out), "--tblog_dir", str(out / "tb"),
                "--batch_size", "2", "--max_epoches", "1", "--crop_size", "72", "--width", str(WIDTH),
                "--device", "cpu", "--num_workers", "0"]
    argv = {
        "train_boundary": ["--fold", "0", "--list_dir", str(lists), *training],
        "train_affmixed_boundary": ["--fold", "0", "--list_dir", str(lists), "--train_list",
                                    str(lists / "train_aug.txt"), "--la_crf_dir", str(tiny["la"]),
                                    "--ha_crf_dir", str(tiny["ha"]), *training],
        "train_seg": ["--supervision", "full", "--train_list", str(lists / "train_aug.txt"), *training],
        "evaluation_boundary": ["--fold", "0", "--list", str(lists / "train.txt"), "--predict_dir", str(tiny["cams"]),
                                "--type", "npy", "--t", "0.2", "--gt_dir", str(voc_root / "SegmentationClassAug"),
                                "--logfile", str(out / "log.txt"), "--comment", "x", "--workers", "1"],
        "make_splits": ["--voc12_root", str(voc_root), "--out_dir", str(out), "--workers", "1"],
    }[stage]
    assert cli_main([stage, *argv]) == 2
    assert f"{mask_path}: unknown label values [37] (expected 0..20 and 255)" in one_error_line(capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------- 6. preflight

def driver_env(tmp_path: Path, **settings) -> dict:
    """A driver's environment with a VOC12HOME that exists but is never reached: a bad setting must stop it first."""
    env = {k: v for k, v in os.environ.items() if k not in ("WEIGHTS", "FOLD", "OUT", "PSA_OUT", "AMP", "VOC12HOME")}
    env.update({"PYTHON": sys.executable, "VOC12HOME": str(tmp_path / "no_voc_needed"), "DEVICE": "cpu", **settings})
    (tmp_path / "no_voc_needed").mkdir(exist_ok=True)
    return env


@pytest.mark.parametrize("driver, setting, value, message", [
    ("psa", "FOLD", "4", "FOLD must be 0, 1, 2 or 3"),
    ("seg", "FOLD", "-1", "FOLD must be 0, 1, 2 or 3"),
    ("psa", "WIDTH", "0", "WIDTH must be a positive number"),
    ("psa", "CLS_EPOCHS", "1.5", "CLS_EPOCHS must be an integer >= 1"),
    ("psa", "CAM_SCALES", "1.0 -0.5", "CAM_SCALES must be positive numbers"),
    ("psa", "RESIZE_LONG", "512 256", "RESIZE_LONG must be two integers LO HI with 0 < LO <= HI"),
    ("psa", "DEVICE", "gpu", "DEVICE must be auto, cpu, cuda or cuda:N"),
    ("psa", "CLS_OPTIMIZER", "adam", "CLS_OPTIMIZER must be one of sgd adamw"),
    ("RETAB", "THRESHOLD", "1.5", "THRESHOLD must be a number in (0, 1]"),
    ("RETAB", "KERNEL", "4", "KERNEL must be 0 (no erosion) or odd"),
    ("RETAB", "LOGT", "x", "LOGT must be an integer >= 0"),
    ("RETAB", "MOMENTUM", "1", "MOMENTUM must be a number in [0, 1)"),
    ("seg", "SEG_LR", "-1e-3", "SEG_LR must be a positive number"),
    ("seg", "FLIP", "maybe", "FLIP must be one of True False"),
    ("seg", "PYTHON", "/no/such/python", "is not an interpreter that can be run"),
])
def test_drivers_check_their_settings_before_the_first_step(tmp_path, driver, setting, value, message):
    folder = copy_driver(driver, tmp_path)
    env = driver_env(tmp_path, **{setting: value})
    proc = subprocess.run(["sh", f"run_{driver.lower()}.sh"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and value in proc.stderr
    assert "] " not in proc.stdout  # no step started
    assert not (folder / "out").exists() and not (folder / "VOC2012").exists()


def test_settings_check_reads_only_the_drivers_own_settings_and_takes_empty_as_the_default():
    check_driver_settings("run_psa", {"KERNEL": "4", "SUPERVISION": "none", "CLS_EPOCHS": ""})
    with pytest.raises(RetabError, match="^KERNEL must be 0 \\(no erosion\\) or odd, got '4'$"):
        check_driver_settings("run_retab", {"KERNEL": "4"})
    with pytest.raises(RetabError, match="^CAM_SCALES must be positive numbers, got '1.0 0'$"):
        check_driver_settings("run_psa", {"CAM_SCALES": "1.0 0"})
    check_driver_settings("run_psa", {"CAM_SCALES": "1.0 .5 1.5e0", "HUE_JITTER": "0.5", "MOMENTUM": "0"})
    # SGD's momentum with AdamW: refused by the drivers that train with both, before any step
    for driver in ("run_psa", "run_retab"):
        with pytest.raises(RetabError, match="^MOMENTUM is SGD's momentum: it cannot go with OPTIMIZER=adamw"):
            check_driver_settings(driver, {"MOMENTUM": "0.9", "OPTIMIZER": "adamw"})
    check_driver_settings("run_psa", {"MOMENTUM": "0.9", "CLS_OPTIMIZER": "adamw"})  # the classifier then ignores it
    check_driver_settings("run_seg", {"MOMENTUM": "0.9", "OPTIMIZER": "adamw"})  # neither is run_seg's
    assert [b for b in BACKBONES if not check_driver_settings("run_seg", {"BACKBONE": b})] == list(BACKBONES)
    with pytest.raises(RetabError, match="unknown driver"):
        check_driver_settings("run_irn", {})
    # a list the driver's dataset step writes later passes before it exists; any other must exist
    for derived in ("voc12/train.txt", "voc12/train_aug.txt", "voc12/trainaug_fold3_novel.txt"):
        check_driver_settings("run_retab", {"INFER_LIST": derived})
    for missing in ("voc12/mine.txt", "lists/train.txt"):
        with pytest.raises(RetabError, match=f"^INFER_LIST={missing} is not a file$"):
            check_driver_settings("run_retab", {"INFER_LIST": missing})


def test_the_settings_check_starts_without_torch(tmp_path):
    """Every driver runs it first: it must stay quick (no torch import)."""
    code = ("import sys; from retab.cli import main; rc = main(['check_settings', 'run_retab']); "
            "sys.exit(10 + rc if 'torch' in sys.modules else rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FOLD": "2", "THRESHOLD": "0.8"})
    assert proc.returncode == 0, proc.stderr


def test_driver_refuses_an_output_root_under_a_file(tmp_path):
    folder = copy_driver("psa", tmp_path)
    (tmp_path / "afile").write_text("x")
    proc = subprocess.run(["sh", "run_psa.sh"], cwd=folder, env=driver_env(tmp_path, OUT=str(tmp_path / "afile" / "out")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot be created" in proc.stderr
    assert "] " not in proc.stdout


def test_training_refuses_an_output_under_a_file_before_any_work(tiny, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    base = ["train_boundary", "--fold", "0", "--voc12_root", str(tiny["voc"]), "--list_dir", str(tiny["lists"]),
            "--batch_size", "2", "--max_epoches", "1", "--crop_size", "32", "--width", str(WIDTH), "--device", "cpu",
            "--num_workers", "0"]
    assert cli_main(base + ["--out_dir", str(tmp_path / "afile" / "ckpt"), "--tblog_dir", ""]) == 2
    assert f"--out_dir {tmp_path / 'afile' / 'ckpt'} cannot be created: {tmp_path / 'afile'} is a file" \
        in one_error_line(capsys)
    assert cli_main(base + ["--out_dir", str(tmp_path / "ok"), "--tblog_dir", str(tmp_path / "afile")]) == 2
    assert "--tblog_dir" in one_error_line(capsys) and not (tmp_path / "ok").exists()
    assert cli_main(base + ["--out_dir", str(tmp_path / "ok"), "--lr", "-1"]) == 2
    assert "--lr must be positive, got -1.0" in one_error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(RetabError, match="cannot be created: .*ro is not writable"):
            check_writable(tmp_path / "ro" / "out", "--out_dir")
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_a_read_only_output_folder_is_refused_as_the_system_reports_it(tmp_path, monkeypatch):
    """The same check whoever runs it (root may write anywhere): os.access says no, the stage stops."""
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path / "ro")
    with pytest.raises(RetabError, match=r"--out_dir .*ro/out cannot be created: .*ro is not writable"):
        check_writable(tmp_path / "ro" / "out", "--out_dir")


def test_an_empty_infer_list_is_an_error_and_a_bom_is_not_part_of_a_name(tiny, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    argv = ["prop_boundary_target", "--weights", str(tiny["tmp"] / "boundary.pth"), "--voc12_root", str(tiny["voc"]),
            "--out_dir", str(tmp_path / "out"), "--width", str(WIDTH), "--device", "cpu", "--num_workers", "0"]
    assert cli_main(argv + ["--infer_list", str(tmp_path / "empty.txt")]) == 2
    assert f"{tmp_path / 'empty.txt'}: the image list (--infer_list) is empty" in one_error_line(capsys)
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeff2007_000001\r\n2007_000002\n".encode("utf-8"))
    assert voc.read_name_list(bom) == ["2007_000001", "2007_000002"]
    assert cli_main(argv + ["--infer_list", str(bom)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["2007_000001.png", "2007_000002.png"]
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(RetabError, match="binary.txt: not a text list of image names"):
        voc.read_name_list(tmp_path / "binary.txt")


# ----------------------------------------------------------------------------- 7. resume

class OtherNet(TinyNet):
    """Another network with the same tensors: only its name tells them apart."""


@pytest.mark.parametrize("change, message", [
    (dict(channels=8), "its weights are of another network or --width than this TinyNet: 3 with the wrong shape "
                       "(conv.weight: file [4, 3, 3, 3] vs model [8, 3, 3, 3]"),
    (dict(width=0.5), "it was written for --width 1.0, this run has 0.5"),
    (dict(optimizer="adamw"), "it was written for optimizer PolyOptimizer, this run has PolyAdamW"),
    (dict(momentum=0.9), "--momentum was 0.0005 in its run, 0.9 in this one"),
    (dict(lr=0.01), "--lr was 0.1 in its run, 0.01 in this one"),
    (dict(epochs=3), "its schedule has 4 steps, this run's 6"),
])
def test_resume_names_what_differs_in_one_line(tmp_path, change, message):
    interrupted_after_one_epoch(tmp_path)
    with pytest.raises(RetabError) as info:
        run_tiny(tmp_path, resume=True, **change)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{tmp_path / 'tiny.last.pt'}: cannot resume from it: ")
    assert message in text and text.endswith("(delete it to train from the start)")
    assert not (tmp_path / "tiny.pth").exists()


def test_resume_names_another_network_and_an_older_checkpoints_optimizer(tmp_path, monkeypatch):
    interrupted_after_one_epoch(tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "TinyNet", OtherNet)
    with pytest.raises(RetabError, match="written for network TinyNet, this run has OtherNet"):
        run_tiny(tmp_path, resume=True)
    monkeypatch.undo()
    state = torch.load(tmp_path / "tiny.last.pt", weights_only=True)
    for key in ("network", "width", "optimizer_kind"):  # as written before they were recorded
        del state[key]
    torch.save(state, tmp_path / "tiny.last.pt")
    with pytest.raises(RetabError, match=r"its optimizer is SGD, this run's AdamW \(--optimizer\)"):
        run_tiny(tmp_path, resume=True, optimizer="adamw")


def test_resume_reads_a_checkpoint_of_the_previous_format_exactly(tmp_path):
    """Resume files written before RNG states were tensors hold numpy's and Python's own tuples."""
    straight = run_tiny(tmp_path / "a")
    interrupted_after_one_epoch(tmp_path / "b")
    state = torch.load(tmp_path / "b" / "tiny.last.pt", weights_only=True)
    rng = state["rng"]
    rng["numpy"] = ("MT19937", rng["numpy"]["keys"].numpy().astype(np.uint32), rng["numpy"]["pos"],
                    rng["numpy"]["has_gauss"], rng["numpy"]["cached_gaussian"])
    rng["python"] = (rng["python"]["version"], tuple(rng["python"]["internal"].tolist()), rng["python"]["gauss_next"])
    for key in ("network", "width", "optimizer_kind"):
        del state[key]
    torch.save(state, tmp_path / "b" / "tiny.last.pt")
    with pytest.raises(pickle.UnpicklingError):  # torch's plain weights_only load refuses the numpy array
        torch.load(tmp_path / "b" / "tiny.last.pt", weights_only=True)
    resumed = run_tiny(tmp_path / "b", resume=True)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_a_truncated_checkpoint_is_one_line_from_the_cli(tiny, tmp_path, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    torch.save({"model": {}, "optimizer": {}, "epoch": 1}, out / "resnet38_boundary_fold0.last.pt")
    data = (out / "resnet38_boundary_fold0.last.pt").read_bytes()
    (out / "resnet38_boundary_fold0.last.pt").write_bytes(data[: len(data) // 2])  # a kill mid-copy
    argv = ["train_boundary", "--fold", "0", "--voc12_root", str(tiny["voc"]), "--list_dir", str(tiny["lists"]),
            "--batch_size", "2", "--max_epoches", "1", "--crop_size", "32", "--width", str(WIDTH), "--device", "cpu",
            "--num_workers", "0", "--out_dir", str(out), "--tblog_dir", "", "--resume"]
    assert cli_main(argv) == 2
    assert "resnet38_boundary_fold0.last.pt: cannot resume from it: not a readable checkpoint, e.g. truncated" \
        in one_error_line(capsys)
    assert not (out / "resnet38_boundary_fold0.pth").exists()


def test_a_temporary_left_by_a_killed_save_is_removed_on_the_next_run(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    leftovers = [tmp_path / ".tiny.last.pt.k3j2_x.tmp", tmp_path / ".tiny.pth.a8b.tmp"]
    unrelated = [tmp_path / ".other.last.pt.k3j2_x.tmp", tmp_path / "tiny.last.pt.notes"]
    for path in leftovers + unrelated:
        path.write_bytes(b"half a checkpoint")
    run_tiny(tmp_path, epochs=1)
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in unrelated)
    assert (tmp_path / "tiny.pth").is_file()


def test_infer_cls_checks_a_cam_dict_it_reads_back_for_the_crfs(tiny, tmp_path, capsys):
    name = "2007_000002"
    copy_dicts(tiny["cams"], tmp_path / "cam", [name], shifted)  # a CAM "done" but in the other format
    argv = infer_cls_args(tiny, tmp_path, [name], tiny["psa"] / "best" / "res38_cls.pth")
    assert cli_main(argv + ["--out_la_crf", str(tmp_path / "la")]) == 2
    err = one_error_line(capsys)
    assert "keys [0, 7, 15] look like a dict with background" in err and "but infer_cls" in err
    assert not (tmp_path / "la").exists()
