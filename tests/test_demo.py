"""`retab demo`'s settings: the demo's driver settings with --device and --set overrides, and an
environment for the drivers that the caller's shell cannot change."""
import re
from pathlib import Path

import pytest

from retab.misc.errors import RetabError
from retab.stages.demo import DEMO_ENV, DRIVER_SETTINGS, demo_settings, driver_environment

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
