"""`retab infer_aff` (psa/infer_aff.py): the PSA random walk of the CAMs (SPEC 3 and 4).

Per image of --infer_list (default voc12/train.txt): the normalised image zero-padded at the
bottom/right to a multiple of 8 goes through the affinity net; the CAM dict {cam_dir}/{name}.npy
gives the scores (background (1 - max CAM) ** --alpha, 16); the walk (mode 'psa': every pair
within radius 5, T = A ** --beta (8) column-normalised, applied 2 ** --logt (2 ** 8) times)
propagates them. Outputs: {out_rw}/{name}.png, the argmax over the 21 channels (VOC palette PNG),
and with --out_rw_cam the walked score dict {0, k+1: float32 HxW}. Images whose outputs exist
are skipped unless --overwrite.

The loop is retab.engines.walk_inference, shared with RETAB's two boundary-aware walks.
"""
from __future__ import annotations

from retab.engines import walk_inference


def main(argv=None) -> int:
    return walk_inference.main(argv, mode="psa", prog="retab infer_aff",
                               description=__doc__.splitlines()[0], infer_list_default="voc12/train.txt")
