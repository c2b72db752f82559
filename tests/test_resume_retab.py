"""--resume of the RETAB training stages (train_boundary, train_affmixed_boundary): a run stopped at
the first step of epoch 2 and resumed from its {session_name}.last.pt ends with the weights of an
uninterrupted run, bit for bit; --resume before any .last.pt exists trains from the start (and says
so)."""
from __future__ import annotations

import pytest
import torch

from retab.stages import train_affmixed_boundary, train_boundary
from retab.stages.make_splits import make_splits
from helpers import stop_at
from test_retab_stages import base_names_by_mask, build_tiny_voc, fabricate_psa_outputs

WIDTH = 0.125
FOLD = 0


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tensors are tiny, and on a busy machine torch's thread pool made a
    2 s test take 40 s (both runs of a comparison use the same setting, so exactness is unaffected)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory):
    """The tiny VOC tree of test_retab_stages with its fold lists and fabricated la / ha CRF dicts."""
    tmp = tmp_path_factory.mktemp("resume_retab")
    voc_root = build_tiny_voc(tmp / "VOC2012")
    lists = tmp / "voc12"
    make_splits(voc_root, lists, workers=1)
    fabricate_psa_outputs(tmp / "psa", voc_root)
    return {"voc": voc_root, "lists": lists, "psa_out": tmp / "psa" / "out"}


def common_argv(tree, out_dir, batch_size: int, crop_size: int, *extra) -> list[str]:
    return ["--fold", str(FOLD), "--voc12_root", str(tree["voc"]), "--list_dir", str(tree["lists"]),
            "--batch_size", str(batch_size), "--max_epoches", "2", "--crop_size", str(crop_size),
            "--out_dir", str(out_dir), "--tblog_dir", "", "--num_workers", "0", "--device", "cpu",
            "--seed", "3", "--width", str(WIDTH), "--lr", "1e-4", *extra]


def boundary_argv(tree, out_dir, *extra) -> list[str]:
    # fold 0: 4 base samples, batch 2 -> 2 steps per epoch
    return common_argv(tree, out_dir, 2, 32, *extra)


def affmixed_argv(tree, out_dir, *extra) -> list[str]:
    # 6 train_aug images, batch 3 -> 2 steps per epoch; 72 is the smallest crop with radius-5 pairs
    psa_out = tree["psa_out"]
    return common_argv(tree, out_dir, 3, 72, "--train_list", str(tree["lists"] / "train_aug.txt"),
                       "--la_crf_dir", str(psa_out / "psa_trainaug_crf_4.0"),
                       "--ha_crf_dir", str(psa_out / "psa_trainaug_crf_32.0"), *extra)


def check_exact_resume(tmp_path, monkeypatch, caplog, run, argv, session: str, steps_per_epoch: int,
                       patch_step) -> None:
    """An uninterrupted run; a run with --resume but no .last.pt yet (it says so and trains from the
    start) stopped at the first step of epoch 2; the resumed run, which takes the steps of epoch 2
    only. Both end with the same weights and schedule. patch_step(m, wrap): replace the stage's
    step function `step` by wrap(step) on the MonkeyPatch m."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert run(argv(straight)) == 0

    last = interrupted / f"{session}.last.pt"
    calls = []
    with monkeypatch.context() as m, caplog.at_level("INFO", logger="retab"):
        patch_step(m, lambda step: stop_at(step, calls, stop_call=steps_per_epoch))
        with pytest.raises(KeyboardInterrupt):
            run(argv(interrupted, "--resume"))
    assert f"--resume: no {last} yet, training from the start" in caplog.text
    assert not (interrupted / f"{session}.pth").exists()
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 1 and saved["optimizer"]["poly"]["global_step"] == steps_per_epoch
    assert len(calls) == steps_per_epoch

    caplog.clear()
    calls = []
    with monkeypatch.context() as m, caplog.at_level("INFO", logger="retab"):
        patch_step(m, lambda step: stop_at(step, calls))
        assert run(argv(interrupted, "--resume")) == 0
    assert len(calls) == steps_per_epoch  # epoch 2 only: not a fresh 2-epoch run that happens to match
    assert f"resumed {last} at epoch 1 (step {steps_per_epoch})" in caplog.text
    assert "training from the start" not in caplog.text
    a = torch.load(straight / f"{session}.pth", weights_only=True)
    b = torch.load(interrupted / f"{session}.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last_a = torch.load(straight / f"{session}.last.pt", weights_only=True)
    last_b = torch.load(last, weights_only=True)
    assert last_a["epoch"] == last_b["epoch"] == 2
    assert last_a["optimizer"]["poly"] == last_b["optimizer"]["poly"]
    assert last_a["optimizer"]["poly"]["global_step"] == 2 * steps_per_epoch
    # epoch 2 did train: the final weights are not those of epoch 1
    assert any(not torch.equal(saved["model"][k], b[k]) for k in b)


@pytest.mark.slow
def test_train_boundary_resumes_as_if_never_interrupted(voc_tree, tmp_path, monkeypatch, caplog):
    assert len(base_names_by_mask(voc_tree["voc"], FOLD)) == 4  # 2 steps of batch 2 per epoch

    def patch_step(m, wrap):
        m.setattr(train_boundary, "boundary_step", wrap(train_boundary.boundary_step))

    check_exact_resume(tmp_path, monkeypatch, caplog, train_boundary.main,
                       lambda out, *extra: boundary_argv(voc_tree, out, *extra),
                       f"resnet38_boundary_fold{FOLD}", 2, patch_step)


@pytest.mark.slow
def test_train_affmixed_boundary_resumes_as_if_never_interrupted(voc_tree, tmp_path, monkeypatch, caplog):
    def patch_step(m, wrap):
        factory = train_affmixed_boundary.make_affinity_step
        m.setattr(train_affmixed_boundary, "make_affinity_step", lambda radius: wrap(factory(radius)))

    check_exact_resume(tmp_path, monkeypatch, caplog, train_affmixed_boundary.main,
                       lambda out, *extra: affmixed_argv(voc_tree, out, *extra),
                       f"resnet38_affmixed_fold{FOLD}", 2, patch_step)
