"""`retab demo`'s settings: the demo's driver settings with --device and --set overrides, and an
environment for the drivers that the caller's shell cannot change."""
import re
from pathlib import Path

import numpy as np
import pytest

from retab.misc.errors import RetabError
from retab.misc.fileio import save_label_png, save_score_dict, write_text
from retab.stages.demo import DEMO_ENV, DRIVER_SETTINGS, demo_settings, driver_environment, evaluate_rows

REPO = Path(__file__).resolve().parents[1]


def test_driver_settings_are_what_the_drivers_read():
    scripts = [REPO / "psa" / "run_psa.sh", REPO / "psa" / "driver_lib.sh", REPO / "RETAB" / "run_retab.sh",
               REPO / "seg" / "run_seg.sh"]
    read = set()
    for script in scripts:
        read |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)[:-]", script.read_text()))
    assert read - {"PYTHONPATH"} == set(DRIVER_SETTINGS)


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
