"""Running the published drivers as a user would (`sh run_psa.sh` inside a copy of psa/, ...), for
`retab demo`: their environment, the copy, the run with its output to the terminal and a log file,
a linked dataset, the timings they write."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from retab.engines.driver_settings import SETTINGS
from retab.misc.errors import RetabError
from retab.misc.fileio import link_folder

log = logging.getLogger("retab")

DRIVER_FOLDERS = ("psa", "RETAB", "seg")
DRIVER_SCRIPTS = {"psa": "run_psa.sh", "RETAB": "run_retab.sh", "seg": "run_seg.sh"}
# Every environment setting the three drivers read. The demo's runs see only its settings, never
# the caller's shell (an `OUT` or `WEIGHTS` left there would move or change the demo's outputs).
DRIVER_SETTINGS = tuple(SETTINGS)
VOC_PARTS = ("Annotations", "ImageSets/Segmentation", "JPEGImages", "SegmentationClass")


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
    script = DRIVER_SCRIPTS[folder]
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


def link_dataset(source: Path, voc_root: Path) -> None:
    """voc_root -> source (an existing VOC-layout tree), so that the demo folder looks as with the
    mini-VOC; a demo folder that already holds another dataset is refused, never mixed."""
    source = Path(source).resolve()
    missing = [part for part in VOC_PARTS if not (source / part).is_dir()]
    if missing:
        raise RetabError(f"{source}: not a VOC-layout tree (no {', '.join(missing)})")
    if (voc_root.is_symlink() or voc_root.exists()) and voc_root.resolve() != source:
        raise RetabError(f"{voc_root}: this demo folder already holds another dataset; choose another --out")
    link_folder(voc_root, source)


def read_timings(path: Path) -> list[tuple[str, float]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        name, _, seconds = line.partition("\t")
        if seconds:
            rows.append((name, float(seconds)))
    return rows
