"""`retab infer_aff_cam_boundary` (RETAB/infer_aff_cam_boundary.py): boundary-aware random walk, stage 1 (SPEC 4).

Per image of --infer_list: the CAM dict {cam_dir}/{name}.npy (any method's CAMs in the SPEC 5
format, e.g. from `retab convert_cams`) gives the scores, background (1 - max CAM) ** --alpha;
only pairs with both ends non-boundary in the boundary target map {boundary_target_dir}/{name}.png
walk. Outputs: {out_rw}/{name}.png and {out_rw_cam}/{name}.npy with keys 0 and k+1 for each class
k of the CAM dict (what stage 2 reads). The loop is retab.engines.walk_inference.
"""
from __future__ import annotations

from retab.engines import walk_inference


def main(argv=None) -> int:
    return walk_inference.main(argv, mode="stage1", prog="retab infer_aff_cam_boundary",
                               description=__doc__.splitlines()[0])
