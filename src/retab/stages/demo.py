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
import sys
import time
from pathlib import Path

from retab import voc
from retab.engines.demo_pipeline import (copy_drivers, driver_environment, link_dataset, read_timings, repo_root,
                                         run_driver)
from retab.engines.demo_report import evaluate_rows, novel_picture, result_paths, retab_differences, table_text
from retab.misc.args import setup_logging
from retab.misc.errors import RetabError
from retab.misc.fileio import write_text

log = logging.getLogger("retab")


# Settings of the CPU demo: everything the drivers run at published scale, made small enough to
# finish in minutes on 2 cores (the published defaults stay the drivers' defaults). Each comment
# says why in a line; the measurements are in docs/measurements.md, "Why the demo's
# settings are what they are".
DEMO_ENV = {
    "DEVICE": "cpu",
    "WIDTH": "0.125",
    "SEED": "0",
    "CROP_SIZE": "128",
    "RESIZE_LONG": "115 204",
    "BATCH_SIZE": "16",
    # from scratch: every layer trains, with AdamW; 40 epochs, since the val loss still falls at 20
    "CLS_EPOCHS": "40",
    "CLS_LR": "0.002",
    "CLS_OPTIMIZER": "adamw",
    # no hue jitter: the mini-VOC's classes wear signature hues (retab.synth.catalog)
    "HUE_JITTER": "0.0",
    # the published fourth scale, 2.0, lowers every row on the mini-VOC
    "CAM_SCALES": "1.0 0.5 1.5",
    # bf16 autocast pays for the 40 epochs; the walk's labels move by < 0.05 mIoU
    "AMP": "bf16",
    # background (1 - max CAM) ** ALPHA: these CAMs are best at t ~0.47, i.e. ALPHA ~ ln t / ln(1 - t)
    "ALPHA": "1.5",
    # the CRF labels' exponents scaled as ALPHA (published 4 / 32)
    "LA_ALPHA": "0.5",
    "HA_ALPHA": "4",
    # T = A ** BETA, applied 2 ** LOGT times: best on the base-only criterion over three draws
    "BETA": "16",
    "LOGT": "8",
    # AdamW for the boundary and both affinity nets, so that PSA and RETAB differ only in their labels
    "OPTIMIZER": "adamw",
    "BOUNDARY_EPOCHS": "10",
    "BOUNDARY_LR": "0.001",
    # at the published 0.5 the boundary ring of these small pictures covers small objects; 0.8 flags
    # as much as the GT boundary band on the base samples
    "THRESHOLD": "0.8",
    # GT and target maps sampled at each cell's centre, where the CAMs are averaged (published: top-left)
    "GRID_SAMPLING": "nearest-exact",
    # the published 8 epochs for both affinity nets
    "AFF_EPOCHS": "8",
    "AFF_LR": "0.001",
    # 16 epochs: at 8 the fully supervised network was no better than the mixed one
    "SEG_EPOCHS": "16",
    "SEG_LR": "0.001",
    "SCALES": "1.0",
    "NUM_WORKERS": "0",
}


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
