"""Untrusted inputs (issue 24): nothing in a file is run, nothing mislabelled in silence, no output
overwrites an input, bad settings are refused before any work, resume names a mismatch, .params
headers are checked against the file. Every refusal is one line naming the file or setting."""
from __future__ import annotations

import collections
import io
import os
import pickle
import random
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from retab import voc
from retab.cli import main as cli_main
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_npy, save_score_dict
from retab.misc.safe_pickle import load_npy
from retab.optim import make_optimizer, param_groups
from retab.stages.convert_cams import load_irn_dict
from retab.training import TrainConfig, get_rng_state, set_rng_state, train
from helpers import stop_at


class RunsCommand:
    """Unpickling this object runs a shell command that creates `marker`: what a hostile file does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


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
