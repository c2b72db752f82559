"""Evaluation (SPEC 6): confusion/IoU maths by hand, the one-pass threshold scan against a
straightforward per-threshold reference that reloads every file, log format, errors."""
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from retab import metrics, voc
from retab.cli import run_stage
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_gray_png, save_score_dict
from retab.voc import save_label_png
from retab.engines import evaluation
from retab.stages import evaluation_boundary

# ----------------------------------------------------------------------------- hand-computed case

GT = np.array([[0, 0, 1, 1],
               [0, 2, 2, 255],
               [1, 1, 2, 255]])
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 0, 3],
                 [1, 2, 2, 0]])
# valid pixels: 10 (the two 255s drop out, with the prediction 3 and 0 on them)
# label 0: T=3 P=3 TP=2 -> 2/4; label 1: T=4 P=4 TP=3 -> 3/5; label 2: T=3 P=3 TP=2 -> 2/4;
# label 3 (only predicted on an ignored pixel) and all others: T=P=TP=0 -> 0.


def test_confusion_matrix_by_hand():
    conf = metrics.confusion_matrix(GT, PRED)
    expected = np.zeros((21, 21), np.int64)
    expected[0, 0], expected[0, 1] = 2, 1
    expected[1, 1], expected[1, 2] = 3, 1
    expected[2, 2], expected[2, 0] = 2, 1
    np.testing.assert_array_equal(conf, expected)


def test_iou_by_hand_and_the_published_epsilon():
    iou = metrics.iou_per_label(metrics.confusion_matrix(GT, PRED))
    # the 1e-10 makes the IoU a hair below the exact fraction ...
    assert iou[0] == 2 / (4 + 1e-10) and iou[1] == 3 / (5 + 1e-10) and iou[2] == 2 / (4 + 1e-10)
    assert 0 < 0.5 - iou[0] < 1e-10
    # ... and a label absent from GT and prediction exactly 0 (0 / 1e-10), not NaN
    assert np.all(iou[3:] == 0.0)


def test_means_count_absent_labels_as_zero():
    scores = metrics.scores_from_confusion(metrics.confusion_matrix(GT, PRED), fold=0)
    assert scores.miou == pytest.approx((50 + 60 + 50) / 21, rel=1e-9)
    # fold 0: novel labels 1..5 (IoU 60, 50, 0, 0, 0); base: 0 and 6..20 (50 and fifteen 0s)
    assert scores.novel_miou == pytest.approx(110 / 5, rel=1e-9)
    assert scores.base_miou == pytest.approx(50 / 16, rel=1e-9)
    assert scores.iou[1] == pytest.approx(60.0, rel=1e-9)
    assert metrics.scores_from_confusion(np.zeros((21, 21), np.int64)).miou == 0.0


def test_threshold_confusions_equal_argmax_per_threshold():
    """Ties included: scores equal to a float32 threshold go to background (channel 0 first)."""
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 21, (30, 40))
    gt[rng.random(gt.shape) < 0.2] = 255
    label = rng.integers(1, 21, gt.shape)
    score = (rng.integers(0, 12, gt.shape) / 20).astype(np.float32)
    thresholds = [0.0, 0.05, 0.1, 0.25, 0.3, 0.55]
    confs = metrics.confusion_by_threshold(gt, label, score, thresholds)
    for t, conf in zip(thresholds, confs):
        pred = np.where(np.float32(t) >= score, 0, label)
        np.testing.assert_array_equal(conf, metrics.confusion_matrix(gt, pred))


# ----------------------------------------------------------------------------- reference evaluator

def reference_evaluate(names, pred_dir, gt_dir, pred_type, t, fold, boundary_target_dir=None):
    """Per threshold, every file reloaded; the published 21-channel float32 tensor and np.argmax."""
    tp = np.zeros(21)
    t_count = np.zeros(21)
    p_count = np.zeros(21)
    for name in names:
        gt = voc.load_label_png(Path(gt_dir) / f"{name}.png")
        if boundary_target_dir is not None:
            target = voc.load_label_png(Path(boundary_target_dir) / f"{name}.png")
            gt = np.where(target == 0, 255, gt)
        if pred_type == "png":
            pred = voc.load_label_png(Path(pred_dir) / f"{name}.png")
        else:
            scores = load_score_dict(Path(pred_dir) / f"{name}.npy")
            tensor = np.zeros((21,) + gt.shape, np.float32)
            for key, value in scores.items():
                if pred_type == "npy":
                    tensor[key + 1] = value
                elif key != 0:
                    tensor[key] = value
            tensor[0] = t
            pred = np.argmax(tensor, axis=0)
        valid = gt < 255
        for lab in range(21):
            t_count[lab] += np.sum((gt == lab) & valid)
            p_count[lab] += np.sum((pred == lab) & valid)
            tp[lab] += np.sum((gt == lab) & (pred == lab) & valid)
    iou = tp / (t_count + p_count - tp + 1e-10) * 100
    novel = voc.novel_labels(fold)
    base = voc.base_labels(fold)
    return iou, iou.mean(), iou[base].mean(), iou[novel].mean()


def assert_same(scores, ref):
    iou, miou, base, novel = ref
    np.testing.assert_allclose(scores.iou, iou, rtol=0, atol=1e-9)
    assert abs(scores.miou - miou) < 1e-9
    assert abs(scores.base_miou - base) < 1e-9
    assert abs(scores.novel_miou - novel) < 1e-9


def make_dataset(root: Path, count: int = 20, seed: int = 0, pred_type: str = "npy", with_target=False):
    """Random GT masks (with 255), score dicts with ties and grid values, PNG predictions."""
    rng = np.random.default_rng(seed)
    names = [f"img_{i:03d}" for i in range(count)]
    for i, name in enumerate(names):
        h, w = (int(v) for v in rng.integers(12, 30, 2))
        gt = rng.integers(0, 21, (h, w))
        gt[rng.random((h, w)) < 0.15] = 255
        save_label_png(root / "gt" / f"{name}.png", gt)
        save_label_png(root / "png" / f"{name}.png", np.where(rng.random((h, w)) < 0.5, gt % 255, rng.integers(0, 21, (h, w))))
        keys = [int(k) for k in rng.choice(20, int(rng.integers(1, 5)), replace=False)]
        if i % 3 == 0:  # values on the 0.01 grid: exact ties with thresholds and between channels
            maps = {k: (rng.integers(0, 45, (h, w)) / 100).astype(np.float32) for k in keys}
        elif i % 3 == 1:  # float64 maps: the comparison must happen in float32 as published
            maps = {k: rng.random((h, w)) * 0.5 for k in keys}
        else:
            maps = {k: rng.random((h, w)).astype(np.float32) ** 3 for k in keys}
        if pred_type == "npy_new":
            maps = {k + 1: v for k, v in maps.items()}
            maps[0] = rng.random((h, w)).astype(np.float32)  # must be ignored
            if i == 4:
                maps = {0: maps[0]}  # only the ignored background: everything is background
        save_score_dict(root / pred_type / f"{name}.npy", maps)
        if with_target:
            save_gray_png(root / "target" / f"{name}.png", np.where(rng.random((h, w)) < 0.3, 0, 255))
    (root / "list.txt").write_text("".join(n + "\n" for n in names))
    return names


@pytest.mark.parametrize("pred_type", ["npy", "npy_new"])
def test_scan_equals_reference_per_threshold(tmp_path, pred_type):
    names = make_dataset(tmp_path, pred_type=pred_type)
    thresholds = evaluation.scan_thresholds(0.41)
    result = evaluation.evaluate_fold(names, tmp_path / pred_type, tmp_path / "gt", fold=1,
                                          pred_type=pred_type, thresholds=thresholds, workers=2, progress=False)
    assert result.scanned and len(result.curve) == 42
    for scores, t in zip(result.curve, thresholds):
        assert scores.threshold == t
        assert_same(scores, reference_evaluate(names, tmp_path / pred_type, tmp_path / "gt", pred_type, t, 1))
    best = int(np.argmax([s.miou for s in result.curve]))
    assert result.best == result.curve[best]
    best_novel = int(np.argmax([s.novel_miou for s in result.curve]))
    assert result.best_novel == result.curve[best_novel]


def test_serial_and_parallel_agree(tmp_path):
    names = make_dataset(tmp_path, count=40)
    kwargs = dict(pred_type="npy", thresholds=[0.0, 0.1, 0.2], fold=2, progress=False)
    serial = evaluation.evaluate(names, tmp_path / "npy", tmp_path / "gt", workers=1, **kwargs)
    parallel = evaluation.evaluate(names, tmp_path / "npy", tmp_path / "gt", workers=2, **kwargs)
    assert serial == parallel


def test_png_and_target_pixels_equal_reference(tmp_path):
    names = make_dataset(tmp_path, with_target=True)
    for target in (None, tmp_path / "target"):
        result = evaluation.evaluate_fold(names, tmp_path / "png", tmp_path / "gt", fold=3,
                                              boundary_target_dir=target, workers=2, progress=False)
        assert len(result.curve) == 1 and not result.scanned and result.best_novel is None
        assert_same(result.best, reference_evaluate(names, tmp_path / "png", tmp_path / "gt", "png", None, 3, target))
    # masking really removes pixels: fewer GT pixels counted than without it
    plain = evaluation.evaluate(names, tmp_path / "png", tmp_path / "gt", progress=False)
    masked = evaluation.evaluate(names, tmp_path / "png", tmp_path / "gt", boundary_target_dir=tmp_path / "target",
                                 progress=False)
    assert plain.best.miou != masked.best.miou


def test_fixed_threshold_equals_reference(tmp_path):
    names = make_dataset(tmp_path, count=6)
    result = evaluation.evaluate(names, tmp_path / "npy", tmp_path / "gt", "npy", [0.2], fold=0, progress=False)
    assert not result.scanned and result.best.threshold == 0.2
    assert_same(result.best, reference_evaluate(names, tmp_path / "npy", tmp_path / "gt", "npy", 0.2, 0))


@pytest.mark.parametrize("pred_type, threshold", [("png", None), ("npy", 0.2), ("npy_new", 0.13)])
def test_per_image_confusions_are_the_pictures_of_one_evaluation(tmp_path, pred_type, threshold):
    names = make_dataset(tmp_path, count=7, pred_type="npy_new" if pred_type == "npy_new" else "npy")
    confs = evaluation.per_image_confusions(names, tmp_path / pred_type, tmp_path / "gt", pred_type, threshold)
    assert confs.shape == (7, 21, 21)
    # each is its own picture's confusion (list order kept) ...
    gt = voc.load_label_png(tmp_path / "gt" / f"{names[3]}.png")
    if pred_type == "png":
        expected = metrics.confusion_matrix(gt, voc.load_label_png(tmp_path / "png" / f"{names[3]}.png"))
        np.testing.assert_array_equal(confs[3], expected)
    assert confs[3].sum() == np.count_nonzero(gt < 255)
    # ... and together they are what `evaluate` scores
    whole = evaluation.evaluate(names, tmp_path / pred_type, tmp_path / "gt", pred_type,
                                None if threshold is None else [threshold], fold=1, progress=False)
    assert metrics.scores_from_confusion(confs.sum(axis=0), fold=1, threshold=threshold) == whole.best


def test_paired_bootstrap_of_two_pictures_matches_the_exact_distribution():
    """Two pictures A and B: a resample is AA, AB / BA or BB with probabilities 1/4, 1/2, 1/4, and
    an IoU of AA is that of A alone (a ratio of counts). The sd over 20000 rounds is that of the
    three-point distribution."""
    before = np.zeros((2, 21, 21), np.int64)
    after = np.zeros((2, 21, 21), np.int64)
    before[0, 1, 1], before[0, 1, 0] = 5, 5    # A: label 1 half found before ...
    after[0, 1, 1], after[0, 1, 0] = 9, 1      # ... 9 in 10 after
    before[1, 1, 1], before[1, 1, 0] = 30, 10  # B: 30 of 40 before ...
    after[1, 1, 1], after[1, 1, 0] = 28, 12    # ... 28 of 40 after
    iou1 = lambda c: metrics.iou_per_label(c)[1] * 100  # noqa: E731
    g_a = iou1(after[0]) - iou1(before[0])
    g_b = iou1(after[1]) - iou1(before[1])
    g_ab = iou1(after.sum(0)) - iou1(before.sum(0))
    values, weights = np.array([g_a, g_ab, g_b]), np.array([0.25, 0.5, 0.25])
    exact_sd = np.sqrt(np.sum(weights * (values - np.sum(weights * values)) ** 2))
    difference, sd = metrics.paired_bootstrap(before, after, iou1, rounds=20000, seed=1)
    assert difference == pytest.approx(g_ab, rel=1e-12)  # (37 - 35) / 50 = +4 points
    assert difference == pytest.approx(4.0, rel=1e-9)
    assert sd == pytest.approx(exact_sd, rel=0.03)
    # the same seed gives the same sd; identical predictions differ by exactly nothing
    assert metrics.paired_bootstrap(before, after, iou1, rounds=50, seed=4) == \
        metrics.paired_bootstrap(before, after, iou1, rounds=50, seed=4)
    assert metrics.paired_bootstrap(before, before, iou1, rounds=50) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.paired_bootstrap(before, after[:1], iou1)


# ----------------------------------------------------------------------------- command line and log

def cli_args(root: Path, *extra):
    return ["--list", str(root / "list.txt"), "--gt_dir", str(root / "gt"), "--logfile", str(root / "log.txt"),
            "--comment", "my run", *extra]


def log_entries_of(path: Path):
    """Split the log into entries of 4 lines: stamp+comment, fields, summary, rule."""
    lines = path.read_text().splitlines()
    assert len(lines) % 4 == 0
    entries = [lines[i:i + 4] for i in range(0, len(lines), 4)]
    for stamp, fields, summary, rule in entries:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\tmy run", stamp)
        assert rule == "=" * 37
    return entries


def parse_fields(line: str) -> dict:
    return dict(field.split(":", 1) for field in line.split("  ") if field)


def test_curve_cli_logs_best_miou_and_best_novel(tmp_path):
    names = make_dataset(tmp_path, pred_type="npy_new")
    rc = run_stage("evaluation_boundary", cli_args(tmp_path, "--predict_dir", str(tmp_path / "npy_new"),
                                                   "--type", "npy_new", "--curve", "True", "--fold", "0",
                                                   "--targetpixel_dir", "None"))
    assert rc == 0
    entries = log_entries_of(tmp_path / "log.txt")
    assert len(entries) == 2
    result = evaluation.evaluate_fold(names, tmp_path / "npy_new", tmp_path / "gt", 0, "npy_new",
                                          evaluation.scan_thresholds(0.41), progress=False)
    for (stamp, fields, summary, rule), best in zip(entries, (result.best, result.best_novel)):
        assert summary == (f"{best.miou:.2f}/{best.base_miou:.2f}/{best.novel_miou:.2f}, "
                           f"bgscore:{best.threshold:.2f}")
        values = parse_fields(fields)
        assert [k for k in values][:21] == list(voc.LABEL_NAMES)
        assert float(values["mIoU"]) == best.miou and float(values["novel-mIoU"]) == best.novel_miou
        assert float(values["background_score"]) == best.threshold
    ref = reference_evaluate(names, tmp_path / "npy_new", tmp_path / "gt", "npy_new", result.best.threshold, 0)
    assert abs(float(parse_fields(entries[0][1])["mIoU"]) - ref[1]) < 1e-9


def test_single_run_log_and_bool_flags(tmp_path):
    make_dataset(tmp_path, count=5)
    args = cli_args(tmp_path, "--predict_dir", str(tmp_path / "npy"), "--type", "npy", "--t", "0.2", "--fold", "2")
    assert run_stage("evaluation_boundary", args + ["--curve", "False"]) == 0
    entries = log_entries_of(tmp_path / "log.txt")
    assert len(entries) == 1
    assert re.fullmatch(r"\d+\.\d\d/\d+\.\d\d/\d+\.\d\d", entries[0][2])  # no bgscore outside a scan
    assert "background_score" not in parse_fields(entries[0][1])
    assert run_stage("evaluation_boundary", args + ["--curve", "true"]) == 0
    assert len(log_entries_of(tmp_path / "log.txt")) == 3  # appended, 2 more
    with pytest.raises(SystemExit):
        evaluation_boundary.main(args + ["--curve", "maybe"])


def test_psa_cli_with_and_without_fold(tmp_path):
    names = make_dataset(tmp_path, count=5)
    base = cli_args(tmp_path, "--predict_dir", str(tmp_path / "npy"), "--type", "npy", "--curve", "True")
    assert run_stage("evaluation", base) == 0
    (entry,) = log_entries_of(tmp_path / "log.txt")  # no fold: one entry, mIoU alone
    result = evaluation.evaluate(names, tmp_path / "npy", tmp_path / "gt", "npy", evaluation.scan_thresholds(0.59),
                                 progress=False)
    assert len(result.curve) == 60 and result.curve[-1].threshold == 0.59
    assert entry[2] == f"{result.best.miou:.2f}, bgscore:{result.best.threshold:.2f}"
    assert run_stage("evaluation", base + ["--fold", "0"]) == 0
    assert len(log_entries_of(tmp_path / "log.txt")) == 3
    assert run_stage("evaluation", cli_args(tmp_path, "--predict_dir", str(tmp_path / "png"))) == 0


def test_edge_of_range_is_reported_with_a_warning(tmp_path, caplog):
    """All object scores 0.005: any t > 0 turns every object pixel into background, so t = 0 wins."""
    names = ["a", "b"]
    for name in names:
        gt = np.full((6, 8), 3)
        gt[:, :2] = 0
        save_label_png(tmp_path / "gt" / f"{name}.png", gt)
        save_score_dict(tmp_path / "npy" / f"{name}.npy", {2: np.full((6, 8), 0.005, np.float32)})
    (tmp_path / "list.txt").write_text("a\nb\n")
    with caplog.at_level(logging.WARNING, logger="retab"):
        rc = run_stage("evaluation_boundary", cli_args(tmp_path, "--predict_dir", str(tmp_path / "npy"),
                                                       "--type", "npy", "--curve", "True", "--fold", "0"))
    assert rc == 0
    assert sum("edge of the scanned range" in r.getMessage() for r in caplog.records) == 2
    entries = log_entries_of(tmp_path / "log.txt")
    assert len(entries) == 2
    for entry in entries:
        assert entry[2].endswith(", bgscore:0.00")
        assert parse_fields(entry[1])["warning"] == "optimum_at_edge_of_scanned_range"
    # at t = 0 every pixel is predicted 3: label 3 IoU 36 / 48, background 0
    result = evaluation.evaluate_fold(names, tmp_path / "npy", tmp_path / "gt", 0, "npy",
                                          evaluation.scan_thresholds(0.41), progress=False)
    assert result.best_at_edge and result.best.threshold == 0.0
    assert result.best.iou[3] == pytest.approx(75.0) and result.best.iou[0] == 0.0


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_name_the_file(tmp_path):
    names = make_dataset(tmp_path, count=3)
    gt_dir = tmp_path / "gt"

    def evaluate(pred_dir, pred_type="png", **kw):
        thresholds = None if pred_type == "png" else [0.1]
        return evaluation.evaluate(names, pred_dir, gt_dir, pred_type, thresholds, progress=False, **kw)

    (tmp_path / "png" / "img_001.png").unlink()
    with pytest.raises(RetabError, match=re.escape(str(tmp_path / "png" / "img_001.png"))):
        evaluate(tmp_path / "png")
    (tmp_path / "npy" / "img_002.npy").unlink()
    with pytest.raises(RetabError, match=re.escape(str(tmp_path / "npy" / "img_002.npy"))):
        evaluate(tmp_path / "npy", "npy")

    gt0 = voc.load_label_png(gt_dir / "img_000.png")
    save_label_png(tmp_path / "png" / "img_001.png", np.zeros((gt0.shape[0] + 1, gt0.shape[1]), np.uint8))
    save_label_png(tmp_path / "png" / "img_000.png", np.zeros((gt0.shape[0] + 1, gt0.shape[1]), np.uint8))
    with pytest.raises(RetabError, match=re.escape(str(tmp_path / "png" / "img_000.png")) + ".*but the ground truth"):
        evaluate(tmp_path / "png")
    save_score_dict(tmp_path / "npy" / "img_000.npy", {4: np.zeros((gt0.shape[0], gt0.shape[1] + 2))})
    with pytest.raises(RetabError, match=re.escape(str(tmp_path / "npy" / "img_000.npy")) + ".*but the ground truth"):
        evaluate(tmp_path / "npy", "npy")
    save_score_dict(tmp_path / "npy" / "img_000.npy", {20: np.zeros(gt0.shape)})  # npy keys are 0..19
    with pytest.raises(RetabError, match=re.escape(str(tmp_path / "npy" / "img_000.npy")) + ".*unexpected key 20"):
        evaluate(tmp_path / "npy", "npy")

    for i in range(3):
        save_label_png(tmp_path / "png" / f"img_{i:03d}.png", voc.load_label_png(gt_dir / f"img_{i:03d}.png") % 255)
    bad = voc.load_label_png(tmp_path / "png" / "img_002.png")
    bad[0, 0] = 21
    save_label_png(tmp_path / "png" / "img_002.png", bad)
    with pytest.raises(RetabError, match=re.escape(str(tmp_path / "png" / "img_002.png")) + r".*\[21\]"):
        evaluate(tmp_path / "png")
    bad[0, 0] = 255  # 255 is "ignore" in GT only, never a prediction
    save_label_png(tmp_path / "png" / "img_002.png", bad)
    with pytest.raises(RetabError, match=re.escape(str(tmp_path / "png" / "img_002.png")) + r".*\[255\]"):
        evaluate(tmp_path / "png")
    # restored to GT (ignore -> 0): every label of the GT scores 100, the absent ones 0
    save_label_png(tmp_path / "png" / "img_002.png", voc.load_label_png(gt_dir / "img_002.png") % 255)
    present = set()
    for i in range(3):
        present |= set(np.unique(voc.load_label_png(gt_dir / f"img_{i:03d}.png")).tolist()) - {255}
    iou = evaluate(tmp_path / "png").best.iou
    assert all(iou[lab] == pytest.approx(100.0, abs=1e-6) if lab in present else iou[lab] == 0.0 for lab in range(21))

    gt_bad = voc.load_label_png(gt_dir / "img_001.png")
    gt_bad[1, 1] = 100
    save_label_png(gt_dir / "img_001.png", gt_bad)
    with pytest.raises(RetabError, match=re.escape(str(gt_dir / "img_001.png")) + r".*\[100\]"):
        evaluate(tmp_path / "png")


def test_wrong_fold_and_missing_threshold_are_errors(tmp_path, capsys):
    make_dataset(tmp_path, count=2)
    args = cli_args(tmp_path, "--predict_dir", str(tmp_path / "png"))
    assert run_stage("evaluation_boundary", args + ["--fold", "4"]) == 2
    assert "fold must be one of 0..3" in capsys.readouterr().err
    with pytest.raises(RetabError, match="fold"):
        evaluation.evaluate_fold(["img_000"], tmp_path / "png", tmp_path / "gt", fold=-1)
    assert run_stage("evaluation_boundary", cli_args(tmp_path, "--predict_dir", str(tmp_path / "npy"),
                                                     "--type", "npy", "--fold", "0")) == 2
    assert "--t" in capsys.readouterr().err
    assert run_stage("evaluation", args + ["--curve", "True"]) == 2  # a png has no threshold to scan
    assert not (tmp_path / "log.txt").exists()
