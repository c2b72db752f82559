"""A driver's steps (retab.misc.steps): timed where they run, recorded only when they did work; a
training stage run with --resume over a finished session does nothing, as under its driver."""
from __future__ import annotations

import pytest

from retab.cli import main as cli_main
from retab.misc import steps
from retab.misc.steps import record_time, run_step


def test_record_time_replaces_its_own_line_and_keeps_the_others_in_order(tmp_path):
    path = tmp_path / "timings.tsv"
    record_time(path, "train_cls", 12.345)
    record_time(path, "infer_cls", 3.0)
    record_time(path, "train_cls", 1.5)
    assert path.read_text() == "train_cls\t1.50\ninfer_cls\t3.00\n"
    assert [p.name for p in tmp_path.iterdir()] == ["timings.tsv"]  # no temporary left beside it


def test_a_step_is_recorded_when_it_did_work_and_succeeded(tmp_path, capsys):
    timings = tmp_path / "timings.tsv"
    env = {steps.STEP_VAR: "eval_cam", steps.TIMINGS_VAR: str(timings)}
    assert run_step("evaluation", ["--list", "a b.txt"], lambda: 0, env) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[eval_cam] evaluation --list 'a b.txt'" and out[1].startswith("[eval_cam] done in ")
    assert timings.read_text().startswith("eval_cam\t")
    before = timings.read_text()

    def skipped() -> int:
        steps.nothing_to_do()
        return 0

    assert run_step("evaluation", [], skipped, env) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "[eval_cam] nothing to do: done before"
    assert run_step("evaluation", [], lambda: 2, env) == 2  # a failed step leaves no time either
    assert capsys.readouterr().out == "[eval_cam] evaluation\n" and timings.read_text() == before
    # without RETAB_STEP (a stage run by hand) nothing is printed or recorded
    assert run_step("evaluation", [], lambda: 0, {steps.TIMINGS_VAR: str(timings)}) == 0
    assert capsys.readouterr().out == "" and timings.read_text() == before


@pytest.mark.parametrize("stage, session", [("train_cls", "resnet38_cls"), ("train_aff", "resnet38_aff"),
                                            ("train_seg", "resnet38_seg")])
def test_a_finished_training_with_resume_does_nothing_and_reads_nothing(tmp_path, stage, session):
    final = tmp_path / f"{session}.pth"
    final.write_bytes(b"a trained net")
    stamp = final.stat().st_mtime_ns
    argv = [stage, "--voc12_root", str(tmp_path / "no_voc"), "--out_dir", str(tmp_path)]
    if stage == "train_aff":
        argv += ["--la_crf_dir", str(tmp_path / "no_la"), "--ha_crf_dir", str(tmp_path / "no_ha")]
    assert cli_main([*argv, "--resume"]) == 0
    assert final.read_bytes() == b"a trained net" and final.stat().st_mtime_ns == stamp
    # without --resume it trains anew, as published: here it finds no dataset
    assert cli_main(argv) == 2


def test_the_fold_default_session_of_the_retab_trainings_is_found(tmp_path):
    for stage, session in (("train_boundary", "resnet38_boundary_fold2"),
                           ("train_affmixed_boundary", "resnet38_affmixed_fold2")):
        (tmp_path / f"{session}.pth").write_bytes(b"x")
        argv = [stage, "--voc12_root", str(tmp_path / "no_voc"), "--out_dir", str(tmp_path), "--resume"]
        if stage == "train_affmixed_boundary":
            argv += ["--la_crf_dir", "no_la", "--ha_crf_dir", "no_ha"]
        assert cli_main([*argv, "--fold", "2"]) == 0
        assert cli_main([*argv, "--fold", "1"]) == 2  # another fold's session is not done
