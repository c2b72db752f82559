"""`retab demo`'s settings: the demo's driver settings with --device and --set overrides."""
import pytest

from retab.misc.errors import RetabError
from retab.stages.demo import DEMO_ENV, demo_settings


def test_demo_settings_apply_device_and_overrides_without_touching_the_defaults():
    before = dict(DEMO_ENV)
    settings = demo_settings(["CLS_EPOCHS=40", "RESIZE_LONG=230 410", "SEG_LR=1e-3=x"], device="cuda")
    assert settings["DEVICE"] == "cuda" and settings["CLS_EPOCHS"] == "40"
    assert settings["RESIZE_LONG"] == "230 410" and settings["SEG_LR"] == "1e-3=x"  # split at the first '='
    assert {k: v for k, v in settings.items() if k not in ("DEVICE", "CLS_EPOCHS", "RESIZE_LONG", "SEG_LR")} == \
        {k: v for k, v in before.items() if k not in ("DEVICE", "CLS_EPOCHS", "RESIZE_LONG", "SEG_LR")}
    assert DEMO_ENV == before and demo_settings([])["DEVICE"] == "cpu"


@pytest.mark.parametrize("item", ["CLS_EPOCH=3", "CLS_EPOCHS", "=3"])
def test_demo_settings_reject_unknown_keys_and_missing_values(item):
    with pytest.raises(RetabError, match="KEY=VALUE"):
        demo_settings([item])
