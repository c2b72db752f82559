"""`retab demo`: the whole pipeline on the synthetic mini-VOC, on CPU, with the reduced width.

It generates the mini-VOC, copies the published drivers (psa/, RETAB/, seg/) into the output
folder and runs them there exactly as a user would (`sh run_psa.sh`, `FOLD=0 sh run_retab.sh`,
`sh run_seg.sh`), with small-run settings passed through their environment overrides. Then it
prints one table: CAM, PSA random walk, CAM + RETAB (train) and the segmentation network (val),
each with all/base/novel mIoU; CAM + RETAB's differences from the CAM and from PSA's walk with
their spread over resamples of the train pictures (a paired bootstrap: how much of a difference
the draw of a few hundred synthetic pictures could make); the wall time of every stage. And it
writes a picture of a few novel samples (image, GT, CAM, RETAB labels).

A rerun reuses what is finished (the drivers skip trained nets and written outputs).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from retab import voc
from retab.misc.args import setup_logging
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_image, write_text

log = logging.getLogger("retab")

DRIVER_FOLDERS = ("psa", "RETAB", "seg")

# Settings of the CPU demo: everything the drivers run at published scale, made small enough to
# finish in minutes on 2 cores (the published defaults stay the drivers' defaults).
DEMO_ENV = {
    "DEVICE": "cpu",
    "WIDTH": "0.125",
    "SEED": "0",
    "CROP_SIZE": "128",
    "RESIZE_LONG": "115 204",
    "BATCH_SIZE": "16",
    # From scratch (no ImageNet weights): every layer and BatchNorm trains, with AdamW; no hue
    # jitter, because the mini-VOC classes wear signature hues (retab.synth.catalog). 40 epochs: the
    # val loss still fell at 20 (0.13 -> 0.09 at 40) and the CAMs gain 3.7 / 3.6 / 3.9 points
    # (all / base / novel, fp32); bf16 autocast (AMP) pays for the extra epochs (~1.4x faster steps
    # on a CPU, 2.5x faster CAM inference; the walk's labels move by < 0.05 mIoU).
    "CLS_EPOCHS": "40",
    "CLS_LR": "0.002",
    "CLS_OPTIMIZER": "adamw",
    "HUE_JITTER": "0.0",
    # The published CAMs add a fourth scale, 2.0. With it (+35 s) the demo's draw (v7, seed 0, train,
    # all / base / novel) got CAM 48.91 / 53.72 / 33.50 (best t 0.40), PSA walk 55.72 / 60.64 / 39.97,
    # RETAB stage 2 56.55 / 61.88 / 39.49: below the three scales on every row.
    "CAM_SCALES": "1.0 0.5 1.5",
    "AMP": "bf16",
    # The random walks' background is (1 - max CAM) ** ALPHA. The published 16 suits CAMs whose best
    # constant background threshold is ~0.1 (those of an ImageNet-initialised ResNet-38 on VOC);
    # these from-scratch CAMs are best at ~0.47, i.e. ALPHA ~1.2-1.5 (ln t / ln(1 - t)). Measured
    # with the 40-epoch fp32 classifier at LOGT 5 (PSA walk / RETAB stage 2, all mIoU): ALPHA 1.25
    # 56.55 / 57.38, 1.5 56.49 / 57.64, 2 54.36 / -.
    "ALPHA": "1.5",
    # The CRF labels' exponents, scaled the same way (published 4 / 32, i.e. / 8 here). With 4 / 32
    # these CAMs' "sure foreground" cells (SPEC 3, novel-sample rule, whole train pictures) were
    # right for 44 % of the novel pictures' and 53 % of the base pictures' cells; with 0.5 / 4 for
    # 93 % / 94 % (recall 43 % / 55 %; sure background 98 % right either way). PSA walk with the
    # demo's nets retrained on them (novel mIoU): 4 / 32 45.39, 1 / 8 51.13, 0.5 / 4 52.16.
    "LA_ALPHA": "0.5",
    "HA_ALPHA": "4",
    # The walks: T = A ** BETA / column sums, applied 2 ** LOGT times. BETA was the published 8 and
    # LOGT 5, from a rule (a walk's reach grows with the square root of its steps; these grids are
    # ~2.7x smaller a side than VOC's ~63 x 47, so 2 ** 8 / 2.7 ** 2 ~ 2 ** 5). Scanned jointly
    # (BETA 8, 12, 16, 24 x LOGT 5-8, the demo's nets of three draws, seeds 0-2) on the base-only
    # criterion (mIoU of background and base labels on the train pictures without a novel object,
    # averaged over PSA's walk and RETAB's; no novel label is read), BETA 16 with the published
    # LOGT 8 is best: 64.52 against 63.56 at 8 / 5 (12 / 6 64.23, 16 / 7 64.39, 24 / 8 64.10). Our
    # reading: these width-1/8 nets, which fit their affinity labels less well than the published
    # ones, leave middling affinities across edges; a sharper transition lets less through them,
    # and then the published number of steps no longer spreads the scores too far.
    # (docs/mini_voc_measurements.md, first bullet)
    "BETA": "16",
    "LOGT": "8",
    # The later trainings start from that classifier: AdamW (OPTIMIZER, read by both drivers) for
    # RETAB's boundary net, on which its loss goes lower (1.08 vs 1.19 after 10 epochs; chance is
    # 1.39), and for both affinity nets, so that PSA and RETAB differ only in their labels (PSA's
    # walk with the published SGD at lr 0.1: 40.13 / 45.39 / 23.32; with AdamW: 41.57 / 45.83 / 27.95)
    "OPTIMIZER": "adamw",
    "BOUNDARY_EPOCHS": "10",
    "BOUNDARY_LR": "0.001",
    # The boundary net sees edges through a stride-8 grid; on pictures ~2.7x smaller than VOC's its
    # probability ring is as wide as a small object, and at the published 0.5 it flagged 26 % of the
    # pixels (30 % of the novel objects' interiors) against a GT band of 5.4 %. 0.8 flags as much as
    # the band on the base samples (5.7 %, read off base GT only). RETAB stage 2 (all / base /
    # novel): 0.5 56.30 / 59.17 / 47.13, 0.7 57.04 / 59.78 / 48.29, 0.8 57.28 / 60.03 / 48.48,
    # 0.9 57.48 / 59.96 / 49.51 (1 % flagged: the boundaries barely act). On v7 0.8 flags 6.5 % of
    # the base train pictures' pixels against a band of 5.2 %.
    "THRESHOLD": "0.8",
    # The published code samples the base samples' GT and the boundary target maps onto the 1/8 grid
    # at each cell's top-left pixel, half a cell (3.5 px) off the cells over which the CAMs and CRF
    # labels are averaged and where the walks place their scores. On VOC's grids that is a small
    # share of an object; the mini-VOC's objects are ~2.7x fewer cells across, and there it cost
    # RETAB 3.5 novel points (affinity nets trained 4 epochs on the base samples alone, PSA walk: GT
    # at the top-left 47.55, at the centre 51.06, CRF labels 51.33). Whole RETAB at the demo's 8
    # epochs, stage 2 on v6: 58.13 / 61.09 / 48.66 -> 61.80 / 64.63 / 52.74.
    "GRID_SAMPLING": "nearest-exact",
    # Both affinity nets train the published 8 epochs (4 until 2026-11-26; +20 s each). 4 -> 8, v6,
    # seed 0, train, novel mIoU: PSA walk 52.16 -> 54.08, RETAB stage 2 51.30 -> 52.74 (all: 60.29 -> 61.09,
    # 59.98 -> 61.80).
    "AFF_EPOCHS": "8",
    "AFF_LR": "0.001",
    # 16 epochs: on the mini-VOC v5, at 8 the fully supervised network was no better than the mixed
    # one (novel val mIoU full 26.56, mixed 27.83, weak 26.49); at 16 the usual order showed (27.98 >
    # 27.40 > 25.67). On v6, all-mIoU: full 50.72 > mixed 49.01 > weak 44.45 (novel 35.56, 30.27, 30.56);
    # with the 40-epoch bf16 classifier and LOGT 5: full 53.30, mixed 54.28, weak 50.95
    # (docs/mini_voc_measurements.md)
    "SEG_EPOCHS": "16",
    "SEG_LR": "0.001",
    "SCALES": "1.0",
    "NUM_WORKERS": "0",
}


# Every environment setting the three drivers read. The demo's runs see only DEMO_ENV and --set
# values of these, never the caller's shell (an `OUT` or `WEIGHTS` left there would move or change
# the demo's outputs); tests/test_demo.py keeps this list equal to what the drivers read.
DRIVER_SETTINGS = (
    "AFF_EPOCHS", "AFF_LR", "AFF_WEIGHTS", "ALPHA", "AMP", "BACKBONE", "BATCH_SIZE", "BETA", "BOUNDARY_EPOCHS",
    "BOUNDARY_LR", "CAM_SCALES", "CLS_CKPT", "CLS_EPOCHS", "CLS_LR", "CLS_OPTIMIZER", "CRF", "CRF_WORKERS",
    "CROP_SIZE", "DEVICE", "FLIP", "FOLD", "GRID_SAMPLING", "HA_ALPHA", "HUE_JITTER", "INFER_LIST", "KERNEL",
    "LA_ALPHA", "LOGT", "MOMENTUM", "NUM_WORKERS", "OPTIMIZER", "OUT", "PSA_CLS", "PSA_OUT", "PSEUDO_DIR",
    "PYTHON", "RESIZE_LONG", "SCALES", "SEED", "SEG_EPOCHS", "SEG_LR", "SEG_MOMENTUM", "SUPERVISION",
    "SYNTH_SCALE", "THRESHOLD", "VAL_LIST", "VOC12HOME", "WEIGHTS", "WIDTH",
)
# what --set may change: the demo's own settings and the drivers' tuning knobs (not the paths and
# the fold, which the demo lays out itself)
SETTABLE = sorted(set(DEMO_ENV) | {"ALPHA", "BACKBONE", "BETA", "VAL_LIST", "CRF", "CRF_WORKERS", "FLIP", "KERNEL", "LOGT", "MOMENTUM",
                                   "SEG_MOMENTUM", "THRESHOLD"})


def demo_settings(overrides: list[str], device: str = "cpu") -> dict:
    """DEMO_ENV with the device and `KEY=VALUE` overrides applied (keys outside SETTABLE are an error)."""
    settings = {**DEMO_ENV, "DEVICE": device}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in SETTABLE:
            raise RetabError(f"--set {item!r}: expected KEY=VALUE with KEY one of {' '.join(SETTABLE)}")
        settings[key] = value
    return settings


def driver_environment(settings: dict, **fixed) -> dict:
    """The caller's environment without any driver setting, then `settings` and `fixed`."""
    env = {k: v for k, v in os.environ.items() if k not in DRIVER_SETTINGS}
    return {**env, **settings, **fixed}


def repo_root() -> Path:
    """The source checkout holding the drivers (the package is installed editable from it)."""
    root = Path(__file__).resolve().parents[3]
    if not all((root / d).is_dir() for d in DRIVER_FOLDERS):
        raise RetabError(f"{root}: the demo needs the source checkout with {', '.join(DRIVER_FOLDERS)}/ "
                         "(install with `pip install -e .` from the repository)")
    return root


def copy_drivers(root: Path, out: Path) -> None:
    """Copy the driver scripts (not their outputs) so the demo never writes into the checkout."""
    for folder in DRIVER_FOLDERS:
        dst = out / folder
        dst.mkdir(parents=True, exist_ok=True)
        for src in (root / folder).iterdir():
            if src.is_file() and src.suffix in (".sh", ".py"):
                shutil.copy2(src, dst / src.name)


def run_driver(out: Path, folder: str, env: dict, log_path: Path) -> float:
    """Run `sh run_X.sh` inside out/folder; its output goes to the terminal and a log file."""
    script = {"psa": "run_psa.sh", "RETAB": "run_retab.sh", "seg": "run_seg.sh"}[folder]
    start = time.perf_counter()
    log.info("running %s/%s (log: %s)", folder, script, log_path)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(["sh", script], cwd=out / folder, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        for line in proc.stdout:
            logf.write(line)
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        rc = proc.wait()
    if rc != 0:
        raise RetabError(f"{out / folder / script} failed (exit {rc}); see {log_path}")
    return time.perf_counter() - start


VOC_PARTS = ("Annotations", "ImageSets/Segmentation", "JPEGImages", "SegmentationClass")


def link_dataset(source: Path, voc_root: Path) -> None:
    """voc_root -> source (an existing VOC-layout tree), so that the demo folder looks as with the
    mini-VOC; a demo folder that already holds another dataset is refused, never mixed."""
    source = Path(source).resolve()
    missing = [part for part in VOC_PARTS if not (source / part).is_dir()]
    if missing:
        raise RetabError(f"{source}: not a VOC-layout tree (no {', '.join(missing)})")
    if voc_root.is_symlink() or voc_root.exists():
        if voc_root.resolve() != source:
            raise RetabError(f"{voc_root}: this demo folder already holds another dataset; choose another --out")
        return
    voc_root.parent.mkdir(parents=True, exist_ok=True)
    voc_root.symlink_to(source, target_is_directory=True)


def read_timings(path: Path) -> list[tuple[str, float]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        name, _, seconds = line.partition("\t")
        if seconds:
            rows.append((name, float(seconds)))
    return rows


def result_paths(out: Path, fold: int) -> dict:
    """Where the table's inputs lie in a demo folder: the train and val lists (read), the fold's
    novel-sample list, the dataset and its GT masks, each row's predictions."""
    psa_out = out / "psa" / "out"
    retab_out = out / "RETAB" / "out" / f"fold{fold}"
    voc_root = out / "data" / "VOC2012"
    return {"train": voc.read_name_list(out / "psa" / "voc12" / "train.txt"),
            "val": voc.read_name_list(out / "psa" / "voc12" / "val.txt"),
            "novel_list": out / "psa" / "voc12" / f"trainaug_fold{fold}_novel.txt",
            "voc_root": voc_root, "gt": voc_root / "SegmentationClass",
            "cam": psa_out / "psa_trainaug_cam", "psa_rw": psa_out / "psa_rw",
            "retab_rw": retab_out / "rw_stage2", "retab_scores": retab_out / "rw_cam_stage2",
            "seg": out / "seg" / "out" / f"fold{fold}_mixed" / "pred_val"}


def evaluate_rows(out: Path, fold: int) -> list[tuple[str, object]]:
    """(row name, Scores) for the table, computed from the files the drivers wrote. Both background
    scans cover PSA's wider range (0.00 .. 0.59): the demo's from-scratch CAMs are best near 0.45,
    beyond RETAB's published 0.41, where the CAM row would be understated."""
    from retab.engines.evaluation import PSA_SCAN_LAST, scan_thresholds
    from retab.engines.evaluation import evaluate_fold as evaluate

    p = result_paths(out, fold)
    train, gt = p["train"], p["gt"]
    rows = []
    cam = evaluate(train, p["cam"], gt, fold, "npy", thresholds=scan_thresholds(PSA_SCAN_LAST), progress=False)
    rows.append(("CAM (train)", cam.best))
    rows.append(("PSA random walk (train)", evaluate(train, p["psa_rw"], gt, fold, progress=False).best))
    rows.append(("CAM + RETAB (train)", evaluate(train, p["retab_rw"], gt, fold, progress=False).best))
    scan = evaluate(train, p["retab_scores"], gt, fold, "npy_new", thresholds=scan_thresholds(PSA_SCAN_LAST),
                    progress=False)
    rows.append(("CAM + RETAB, background scan (train)", scan.best))
    if p["seg"].is_dir():
        rows.append(("segmentation, mixed (val)", evaluate(p["val"], p["seg"], gt, fold, progress=False).best))
    return rows


def retab_differences(out: Path, fold: int, cam_threshold: float, rounds: int = 1000) -> list[tuple]:
    """[(name, (all-mIoU difference, sd), (novel-mIoU difference, sd))] of CAM + RETAB's labels
    against the CAM (at the table's threshold) and against PSA's walk on the train pictures. The sd
    is a paired bootstrap over those pictures (metrics.paired_bootstrap): a few hundred synthetic
    pictures leave differences of a few points within the noise of the draw."""
    from retab.metrics import paired_bootstrap, scores_from_confusion
    from retab.engines.evaluation import per_image_confusions

    p = result_paths(out, fold)
    train, gt = p["train"], p["gt"]
    retab = per_image_confusions(train, p["retab_rw"], gt)
    others = (("CAM + RETAB - CAM", per_image_confusions(train, p["cam"], gt, "npy", cam_threshold)),
              ("CAM + RETAB - PSA random walk", per_image_confusions(train, p["psa_rw"], gt)))
    scores = (lambda c: scores_from_confusion(c).miou, lambda c: scores_from_confusion(c, fold).novel_miou)
    return [(name, *(paired_bootstrap(before, retab, score, rounds) for score in scores)) for name, before in others]


def table_text(rows, timings: list[tuple[str, str, float]], fold: int, differences=(), pictures: int = 0) -> str:
    lines = [f"| result (fold {fold}) | mIoU all | base | novel |", "|---|---|---|---|"]
    for name, s in rows:
        t = f" (bg t={s.threshold:.2f})" if s.threshold is not None else ""
        lines.append(f"| {name}{t} | {s.miou:.2f} | {s.base_miou:.2f} | {s.novel_miou:.2f} |")
    if differences:
        lines += ["", f"| difference (train; sd over resamples of its {pictures} pictures) | mIoU all | novel |",
                  "|---|---|---|"]
        lines += [f"| {name} | {a:+.2f} (sd {a_sd:.2f}) | {n:+.2f} (sd {n_sd:.2f}) |"
                  for name, (a, a_sd), (n, n_sd) in differences]
    lines += ["", "| stage | step | seconds |", "|---|---|---|"]
    lines += [f"| {folder} | {step} | {sec:.1f} |" for folder, step, sec in timings]
    return "\n".join(lines) + "\n"


def novel_picture(out: Path, fold: int, cam_threshold: float, count: int = 4) -> Path | None:
    """Rows of image | GT | CAM | RETAB labels for a few novel train samples."""
    p = result_paths(out, fold)
    novel = set(voc.read_name_list(p["novel_list"]))
    names = [n for n in p["train"] if n in novel][:count]
    if not names:
        return None
    palette = np.array(voc.voc_palette(), np.uint8).reshape(256, 3)
    rows = []
    for name in names:
        img = np.asarray(voc.load_image(voc.image_path(p["voc_root"], name)))
        gt = voc.load_label_png(p["gt"] / f"{name}.png")
        cams = load_score_dict(p["cam"] / f"{name}.npy")
        keys = sorted(cams)
        stack = np.stack([np.full(gt.shape, cam_threshold, np.float32)] + [cams[k] for k in keys])
        cam_labels = np.array([0] + [k + 1 for k in keys], np.uint8)[stack.argmax(0)]
        retab = voc.load_label_png(p["retab_rw"] / f"{name}.png")
        tiles = [img] + [palette[x] for x in (gt, cam_labels, retab)]
        rows.append(np.concatenate([t for tile in tiles for t in (tile, np.full((tile.shape[0], 4, 3), 255, np.uint8))],
                                   axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path = out / f"novel_samples_fold{fold}.png"
    save_image(path, Image.fromarray(np.concatenate(rows, axis=0)))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="retab demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--scale", default="small", help="mini-VOC size: tiny | small | medium")
    parser.add_argument("--seed", type=int, default=0, help="dataset and training seed")
    parser.add_argument("--fold", type=int, default=0, help="fold of the RETAB and segmentation steps")
    parser.add_argument("--no_seg", action="store_true", help="stop after the RETAB step")
    parser.add_argument("--device", default=DEMO_ENV["DEVICE"], choices=("auto", "cpu", "cuda"),
                        help="device of every stage (default cpu)")
    parser.add_argument("--image_side", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                        help="picture sizes of the mini-VOC (default: synth_voc's)")
    parser.add_argument("--voc12_root", default=None,
                        help="run on this existing VOC-layout tree instead of generating the mini-VOC "
                             "(linked as OUT/data/VOC2012)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one of the demo's driver settings (e.g. --set CLS_EPOCHS=40); "
                        "repeatable; keys: " + " ".join(SETTABLE))
    args = parser.parse_args(argv)
    setup_logging()
    voc.check_fold(args.fold)
    if args.voc12_root and args.image_side:
        raise RetabError("--image_side shapes the generated mini-VOC: it does not apply with --voc12_root")
    settings = demo_settings(args.set, device=args.device)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = repo_root()
    t0 = time.perf_counter()

    voc_root = out / "data" / "VOC2012"
    if args.voc12_root:
        link_dataset(Path(args.voc12_root), voc_root)
        timings = []
    else:
        from retab.stages import synth_voc
        start = time.perf_counter()
        side = ["--image_side", *map(str, args.image_side)] if args.image_side else []
        if synth_voc.main(["--out", str(voc_root), "--scale", args.scale, "--seed", str(args.seed), *side]):
            raise RetabError(f"{voc_root}: generating the mini-VOC failed")
        timings = [("data", "synth_voc", time.perf_counter() - start)]
    copy_drivers(root, out)

    env = driver_environment(settings, PYTHON=sys.executable, VOC12HOME=str(voc_root), FOLD=str(args.fold),
                             SEED=str(args.seed), PYTHONUNBUFFERED="1")
    folders = ["psa", "RETAB"] + ([] if args.no_seg else ["seg"])
    log_path = out / "demo.log"
    for folder in folders:
        run_driver(out, folder, env, log_path)
        timing_file = {"psa": out / "psa" / "out", "RETAB": out / "RETAB" / "out" / f"fold{args.fold}",
                       "seg": out / "seg" / "out" / f"fold{args.fold}_mixed"}[folder] / "timings.tsv"
        timings += [(folder, step, sec) for step, sec in read_timings(timing_file)]
    timings.append(("all", "total (this run)", time.perf_counter() - t0))

    rows = evaluate_rows(out, args.fold)
    cam_threshold = rows[0][1].threshold
    differences = retab_differences(out, args.fold, cam_threshold)
    pictures = len(result_paths(out, args.fold)["train"])
    table = table_text(rows, timings, args.fold, differences, pictures)
    write_text(out / "results.md", table)
    picture = novel_picture(out, args.fold, cam_threshold)
    print()
    print(table)
    if picture is not None:
        print(f"picture of novel samples (image | GT | CAM | RETAB): {picture}")
    print(f"table written to {out / 'results.md'}")
    return 0
