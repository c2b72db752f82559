"""The drivers' set-up steps in Python: `retab use_dataset` (dataset chosen, generated, linked,
listed) and `retab use_psa_outputs` (PSA's outputs checked and linked), over link_folder."""
from __future__ import annotations

import os

import pytest

from retab import voc
from retab.cli import main as cli_main
from retab.misc.errors import RetabError
from retab.misc.fileio import link_folder
from retab.misc.steps import run_step
from retab.stages import use_dataset, use_psa_outputs
from test_make_splits import SAMPLES, build_tree


def test_link_folder_makes_replaces_a_link_and_never_a_folder(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    link = tmp_path / "work" / "VOC2012"
    assert link_folder(link, first) and link.resolve() == first
    assert not link_folder(link, first)  # same target: nothing changes
    assert link_folder(link, second) and link.resolve() == second  # another target: the link moves
    assert os.listdir(tmp_path / "work") == ["VOC2012"]  # no temporary left
    real = tmp_path / "work" / "real"
    real.mkdir()
    with pytest.raises(RetabError, match="exists and is not a link"):
        link_folder(real, first)
    assert real.is_dir() and not real.is_symlink()
    with pytest.raises(RetabError, match="not a folder"):
        link_folder(tmp_path / "work" / "x", tmp_path / "missing")


@pytest.fixture
def trees(tmp_path, monkeypatch):
    """Two VOC-layout trees and an empty driver folder as the working directory."""
    for name in ("one", "two"):
        build_tree(tmp_path / name, SAMPLES, train=["2007_000001", "2008_000003"], val=["2009_000005"])
    (tmp_path / "driver").mkdir()
    monkeypatch.chdir(tmp_path / "driver")
    return tmp_path


def run_as_step(argv, monkeypatch, capsys):
    """`RETAB_STEP=dataset retab use_dataset ...` as a driver runs it: (exit status, step lines)."""
    monkeypatch.setenv("RETAB_STEP", "dataset")
    monkeypatch.delenv("RETAB_TIMINGS", raising=False)
    rc = run_step("use_dataset", argv, lambda: use_dataset.main(argv))
    return rc, [line for line in capsys.readouterr().out.splitlines() if line.startswith(("[dataset]", "linked"))]


def test_the_first_existing_candidate_is_linked_and_listed_then_a_rerun_does_nothing(trees, monkeypatch, capsys):
    argv = ["missing", str(trees / "one"), str(trees / "two")]
    rc, lines = run_as_step(argv, monkeypatch, capsys)
    assert rc == 0 and lines[1] == f"linked ./VOC2012 -> {trees / 'one'}"
    assert (trees / "driver" / "VOC2012").resolve() == trees / "one"
    assert voc.read_name_list(trees / "driver" / "voc12" / "train_aug.txt") == sorted(SAMPLES)[:4]  # all but val
    rc, lines = run_as_step(argv, monkeypatch, capsys)
    assert rc == 0 and lines[-1] == "[dataset] nothing to do: done before"
    # VOC12HOME wins over the candidates: the link moves and the lists are remade from that tree
    rc, lines = run_as_step(["--voc12home", str(trees / "two"), *argv], monkeypatch, capsys)
    assert rc == 0 and lines[1] == f"linked ./VOC2012 -> {trees / 'two'}" and "nothing to do" not in lines[-1]
    assert (trees / "driver" / "voc12" / ".voc12home").read_text().strip() == str(trees / "two")


def test_without_any_dataset_the_mini_voc_is_generated_once(trees, monkeypatch, capsys):
    mini = trees / "data" / "mini_voc" / "VOC2012"
    argv = ["VOC2012", "--mini_voc", str(mini), "--scale", "tiny"]
    rc, lines = run_as_step(argv, monkeypatch, capsys)
    assert rc == 0 and (mini / ".synth_voc.json").is_file() and (trees / "driver" / "VOC2012").resolve() == mini
    rc, lines = run_as_step(argv, monkeypatch, capsys)  # ./VOC2012 (the link) is now the first candidate
    assert rc == 0 and lines[-1] == "[dataset] nothing to do: done before"


def test_a_bad_dataset_choice_is_one_line_and_touches_nothing(trees, capsys):
    assert cli_main(["use_dataset", "--voc12home", str(trees / "nowhere"), str(trees / "one")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"VOC12HOME={trees / 'nowhere'} is not a folder")
    (trees / "driver" / "VOC2012").mkdir()  # a real folder where the link goes: kept, with its files
    (trees / "driver" / "VOC2012" / "mine.txt").write_text("x")
    assert cli_main(["use_dataset", "--voc12home", str(trees / "one")]) == 2
    assert "exists and is not a link" in capsys.readouterr().err
    assert (trees / "driver" / "VOC2012" / "mine.txt").read_text() == "x"
    assert not (trees / "driver" / "voc12").exists()
    assert cli_main(["use_dataset", "nowhere"]) == 2
    assert "no dataset: none of nowhere exists" in capsys.readouterr().err


def test_psa_outputs_are_checked_then_linked_in_the_published_layout(tmp_path, monkeypatch, capsys):
    psa_out = tmp_path / "psa" / "out"
    for name in ("psa_trainaug_cam", "psa_trainaug_crf_4.0"):
        (psa_out / name).mkdir(parents=True)
    (tmp_path / "RETAB").mkdir()
    monkeypatch.chdir(tmp_path / "RETAB")
    argv = ["use_psa_outputs", "--psa_out", "../psa/out", "--crf_dirs", "psa_trainaug_crf_4.0", "psa_trainaug_crf_32.0"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("PSA output ../psa/out/psa_trainaug_crf_32.0 not found: run psa/run_psa.sh first (or set PSA_OUT)")
    assert sorted(os.listdir(".")) == []  # nothing linked
    assert cli_main(argv[:-1]) == 0
    assert (tmp_path / "RETAB" / "psa_initcam" / "psa_trainaug_cam").resolve() == psa_out / "psa_trainaug_cam"
    assert (tmp_path / "RETAB" / "psa_afflabel" / "psa_trainaug_crf_4.0").resolve() == psa_out / "psa_trainaug_crf_4.0"
    assert use_psa_outputs.LINKS == ("psa_initcam", "psa_afflabel")
