"""`retab demo`'s settings: the demo's driver settings with --device and --set overrides, and an
environment for the drivers that the caller's shell cannot change."""
import re
from pathlib import Path

import numpy as np
import pytest

from retab.misc.errors import RetabError
from retab.misc.fileio import save_score_dict, write_text
from retab.voc import save_label_png
from retab.engines.driver_settings import DRIVERS, settings_of
from retab.engines.demo_pipeline import DRIVER_SETTINGS, VOC_PARTS, driver_environment, link_dataset
from retab.engines.demo_report import evaluate_rows, retab_differences
from retab.stages.demo import DEMO_ENV, demo_settings, main

REPO = Path(__file__).resolve().parents[1]


def test_driver_settings_are_what_the_drivers_read():
    """retab.engines.driver_settings lists, per driver, exactly the settings its script (with the
    shared driver_lib.sh) reads, so that check_settings checks them all and the demo drops them all."""
    lib = (REPO / "psa" / "driver_lib.sh").read_text()
    for driver, script in (("run_psa", "psa/run_psa.sh"), ("run_retab", "RETAB/run_retab.sh"),
                           ("run_seg", "seg/run_seg.sh")):
        read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)[:-]", (REPO / script).read_text() + lib))
        assert read - {"PYTHONPATH"} == set(settings_of(driver)), driver
    assert set(DRIVER_SETTINGS) == {name for d in DRIVERS for name in settings_of(d)}


def test_driver_environment_drops_the_callers_driver_settings(monkeypatch):
    monkeypatch.setenv("OUT", "/somewhere/else")
    monkeypatch.setenv("WEIGHTS", "mine.pth")
    monkeypatch.setenv("RETAB_UNRELATED", "kept")
    env = driver_environment({"DEVICE": "cpu"}, FOLD="3")
    assert "OUT" not in env and "WEIGHTS" not in env
    assert env["RETAB_UNRELATED"] == "kept" and env["DEVICE"] == "cpu" and env["FOLD"] == "3"


def test_demo_settings_apply_device_and_overrides_without_touching_the_defaults():
    before = dict(DEMO_ENV)
    settings = demo_settings(["CLS_EPOCHS=40", "RESIZE_LONG=230 410", "SEG_LR=1e-3=x"], device="cuda")
    assert settings["DEVICE"] == "cuda" and settings["CLS_EPOCHS"] == "40"
    assert settings["RESIZE_LONG"] == "230 410" and settings["SEG_LR"] == "1e-3=x"  # split at the first '='
    assert {k: v for k, v in settings.items() if k not in ("DEVICE", "CLS_EPOCHS", "RESIZE_LONG", "SEG_LR")} == \
        {k: v for k, v in before.items() if k not in ("DEVICE", "CLS_EPOCHS", "RESIZE_LONG", "SEG_LR")}
    assert DEMO_ENV == before and demo_settings([])["DEVICE"] == "cpu"


@pytest.mark.parametrize("item", ["CLS_EPOCH=3", "CLS_EPOCHS", "=3", "OUT=/tmp/x", "FOLD=2"])
def test_demo_settings_reject_unknown_keys_and_missing_values(item):
    with pytest.raises(RetabError, match="KEY=VALUE"):
        demo_settings([item])


def test_table_rows_scan_the_cam_threshold_beyond_retabs_range(tmp_path):
    """A CAM whose right (background) half scores 0.44 is only told from the aeroplane on the left
    (0.9) by a threshold >= 0.44, past RETAB's published 0.41: the table's CAM row finds it."""
    gt = np.zeros((16, 16), np.uint8)
    gt[:, :8] = 1
    for lst in ("train", "val"):
        write_text(tmp_path / "psa" / "voc12" / f"{lst}.txt", "2007_000001\n")
    save_label_png(tmp_path / "data" / "VOC2012" / "SegmentationClass" / "2007_000001.png", gt)
    cam = np.where(gt == 1, 0.9, 0.44).astype(np.float32)
    save_score_dict(tmp_path / "psa" / "out" / "psa_trainaug_cam" / "2007_000001.npy", {0: cam})
    save_label_png(tmp_path / "psa" / "out" / "psa_rw" / "2007_000001.png", gt)
    retab = tmp_path / "RETAB" / "out" / "fold0"
    save_label_png(retab / "rw_stage2" / "2007_000001.png", gt)
    save_score_dict(retab / "rw_cam_stage2" / "2007_000001.npy", {0: 1 - cam, 1: cam})
    rows = dict(evaluate_rows(tmp_path, 0))
    cam_row = rows["CAM (train)"]
    assert cam_row.threshold == pytest.approx(0.44)
    assert cam_row.miou == pytest.approx(rows["PSA random walk (train)"].miou)


def test_differences_are_the_rows_differences_and_one_picture_leaves_no_spread(tmp_path):
    """Two train pictures: RETAB finds the aeroplane on both; the CAM (0.7 on it in the first, 0.05
    in the second, 0.1 around it) and PSA's walk each on one. The table's differences are its rows'
    differences; resampling one picture changes nothing, so with one picture the sd is exactly 0."""
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 1
    names = ["2007_000001", "2007_000002"]
    retab = tmp_path / "RETAB" / "out" / "fold0"
    for i, name in enumerate(names):
        save_label_png(tmp_path / "data" / "VOC2012" / "SegmentationClass" / f"{name}.png", gt)
        cam = np.where(gt == 1, 0.7 if i == 0 else 0.05, 0.1).astype(np.float32)
        save_score_dict(tmp_path / "psa" / "out" / "psa_trainaug_cam" / f"{name}.npy", {0: cam})
        save_label_png(tmp_path / "psa" / "out" / "psa_rw" / f"{name}.png", gt if i == 1 else 0 * gt)
        save_label_png(retab / "rw_stage2" / f"{name}.png", gt)
        save_score_dict(retab / "rw_cam_stage2" / f"{name}.npy", {0: 1 - cam, 1: cam})
    for count in (2, 1):
        for lst in ("train", "val"):
            write_text(tmp_path / "psa" / "voc12" / f"{lst}.txt", "".join(n + "\n" for n in names[:count]))
        rows = dict(evaluate_rows(tmp_path, 0))
        cam_row = rows["CAM (train)"]
        differences = {name: (a, n) for name, a, n in retab_differences(tmp_path, 0, cam_row.threshold, rounds=200)}
        for name, row in (("CAM + RETAB - CAM", cam_row), ("CAM + RETAB - PSA random walk", rows["PSA random walk (train)"])):
            (all_diff, all_sd), (novel_diff, novel_sd) = differences[name]
            assert all_diff == pytest.approx(rows["CAM + RETAB (train)"].miou - row.miou, abs=1e-9)
            assert novel_diff == pytest.approx(rows["CAM + RETAB (train)"].novel_miou - row.novel_miou, abs=1e-9)
            assert (novel_sd > 0) == (count == 2)
            assert (all_sd == 0) == (count == 1)
    # one picture: RETAB = GT everywhere, the CAM finds the square (IoU 100 either way) -> no gain
    assert differences["CAM + RETAB - CAM"][1] == (0.0, 0.0)
    assert differences["CAM + RETAB - PSA random walk"][1][0] == pytest.approx(100 / 5)


def voc_tree(root: Path) -> Path:
    for part in VOC_PARTS:
        (root / part).mkdir(parents=True)
    return root


def test_an_existing_dataset_is_linked_once_and_never_mixed_with_another(tmp_path):
    first, second = voc_tree(tmp_path / "first"), voc_tree(tmp_path / "second")
    voc_root = tmp_path / "demo" / "data" / "VOC2012"
    link_dataset(first, voc_root)
    assert voc_root.resolve() == first.resolve()
    link_dataset(first, voc_root)  # a rerun on the same dataset
    with pytest.raises(RetabError, match="already holds another dataset"):
        link_dataset(second, voc_root)
    assert voc_root.resolve() == first.resolve()
    generated = tmp_path / "generated" / "data" / "VOC2012"
    generated.mkdir(parents=True)  # a demo folder with the mini-VOC in it
    with pytest.raises(RetabError, match="already holds another dataset"):
        link_dataset(first, generated)


def test_a_folder_without_the_voc_layout_is_refused_before_any_run(tmp_path):
    (tmp_path / "pics" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(RetabError, match=r"not a VOC-layout tree \(no Annotations, ImageSets/Segmentation, "
                                         r"SegmentationClass\)"):
        main(["--voc12_root", str(tmp_path / "pics"), "--out", str(tmp_path / "demo")])
    assert not (tmp_path / "demo" / "psa").exists()
    with pytest.raises(RetabError, match="--image_side"):
        main(["--voc12_root", str(tmp_path / "pics"), "--image_side", "100", "200", "--out", str(tmp_path / "d2")])
