"""The initial weights of a training stage (resolve_initial_weights): what the drivers' `--weights
auto` picks, and the classifier's from-scratch rule."""
from __future__ import annotations

import logging

import pytest

from retab.engines.stage_support import resolve_initial_weights
from retab.published import IMAGENET_PARAMS_NAME
from retab.stages import train_cls, train_seg


def parse(parser, tmp_path, *argv):
    return parser.parse_args(["--voc12_root", str(tmp_path), *argv])


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """pretrained_model/ and other/ each holding the .params, and a trained classifier, under the
    working directory."""
    monkeypatch.chdir(tmp_path)
    for folder in ("pretrained_model", "other"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / IMAGENET_PARAMS_NAME).write_bytes(b"")
    (tmp_path / "cls.pth").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("argv, expected", [
    ([], None),  # absent: none (the stage's published behaviour)
    (["--weights", ""], None),  # WEIGHTS= in a driver
    (["--weights", "mine.pth"], "mine.pth"),  # a path, found or not: the stage reads it and says
    (["--weights", "auto"], f"pretrained_model/{IMAGENET_PARAMS_NAME}"),
    (["--weights", "auto", "--imagenet_dirs", "nowhere", "other"], f"other/{IMAGENET_PARAMS_NAME}"),
    (["--weights", "auto", "--fallback_weights", "cls.pth"], f"pretrained_model/{IMAGENET_PARAMS_NAME}"),
    (["--weights", "auto", "--imagenet_dirs", "nowhere", "--fallback_weights", "cls.pth"], "cls.pth"),
    (["--weights", "auto", "--width", "0.5", "--fallback_weights", "cls.pth"], "cls.pth"),  # .params: width 1 only
    (["--weights", "auto", "--width", "0.5", "--fallback_weights", "missing.pth"], None),
    (["--weights", "auto", "--backbone", "efficientnet_lite0", "--fallback_weights", "cls.pth"], None),  # its package's
])
def test_auto_takes_the_imagenet_weights_then_the_fallback_then_none(folders, argv, expected):
    args = parse(train_seg.build_parser(), folders, *argv)
    assert resolve_initial_weights(args) == expected


def test_auto_says_when_it_falls_back(folders, caplog):
    caplog.set_level(logging.WARNING, logger="retab")
    args = parse(train_seg.build_parser(), folders, "--weights", "auto", "--imagenet_dirs", "nowhere",
                 "--fallback_weights", "cls.pth")
    assert resolve_initial_weights(args) == "cls.pth"
    assert f"no ImageNet weights ({IMAGENET_PARAMS_NAME} in nowhere): starting from the backbone of cls.pth" \
        in caplog.text
    caplog.clear()
    args.fallback_weights = "gone.pth"
    assert resolve_initial_weights(args) is None
    assert "and no gone.pth: starting from a random initialisation" in caplog.text


@pytest.mark.parametrize("argv, expected", [
    ([], (None, False)),  # by hand without weights: the published frozen BatchNorms, estimated statistics
    (["--from_scratch"], (None, True)),
    (["--weights", ""], (None, True)),  # the drivers' WEIGHTS=
    (["--weights", "auto", "--imagenet_dirs", "nowhere"], (None, True)),  # the demo's case
    (["--weights", "auto"], (f"pretrained_model/{IMAGENET_PARAMS_NAME}", False)),
    (["--weights", "auto", "--backbone", "efficientnet_lite0"], (None, False)),  # its package's weights
    (["--weights", "", "--backbone", "efficientnet_lite0"], (None, False)),
])
def test_a_classifier_the_drivers_leave_without_weights_trains_from_scratch(folders, argv, expected):
    args = parse(train_cls.build_parser(), folders, *argv)
    assert train_cls.initial_weights(args) == expected
