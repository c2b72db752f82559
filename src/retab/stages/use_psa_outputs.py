"""`retab use_psa_outputs`: PSA's outputs that the RETAB stage reads, checked and linked in the
published layout (run_retab.sh's first step after its settings).

--psa_out (what psa/run_psa.sh wrote) must hold psa_trainaug_cam/ and each of --crf_dirs; it is
linked as ./psa_initcam (the initial CAMs: psa_initcam/psa_trainaug_cam) and ./psa_afflabel (the
CRF labels: psa_afflabel/psa_trainaug_crf_{4.0,32.0}), each replacing an old link, never a folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from retab.misc.errors import RetabError
from retab.misc.fileio import link_folder

CAM_FOLDER = "psa_trainaug_cam"
LINKS = ("psa_initcam", "psa_afflabel")  # published names of the folders holding the CAMs and the CRF labels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab use_psa_outputs", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--psa_out", required=True, help="the output folder of psa/run_psa.sh")
    p.add_argument("--crf_dirs", nargs="*", default=[], metavar="NAME",
                   help="CRF label folders it must hold too (those the mixed affinity training reads)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    psa_out = Path(args.psa_out)
    for name in (CAM_FOLDER, *args.crf_dirs):
        if not (psa_out / name).is_dir():
            raise RetabError(f"PSA output {psa_out / name} not found: run psa/run_psa.sh first (or set PSA_OUT)")
    for link in LINKS:
        if link_folder(link, psa_out):
            print(f"linked ./{link} -> {psa_out.resolve()}", flush=True)
    return 0
