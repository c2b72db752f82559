"""`retab infer_aff_cam_boundary_secondary` (RETAB/infer_aff_cam_boundary_secondary.py): random walk, stage 2 (SPEC 4).

Per image of --infer_list: stage 1's score dict {cam_dir}/{name}.npy (keys 0 and k+1) gives the
scores as they are (no alpha; --alpha is accepted and ignored); boundary-boundary pairs walk both
ways and a pair with one boundary end only from the boundary end into the non-boundary one, so
the boundary pixels take their labels from their surroundings while non-boundary pixels keep
theirs. Outputs: {out_rw}/{name}.png and {out_rw_cam}/{name}.npy with the keys read.
The loop is retab.engines.walk_inference.
"""
from __future__ import annotations

from retab.engines import walk_inference


def main(argv=None) -> int:
    return walk_inference.main(argv, mode="stage2", prog="retab infer_aff_cam_boundary_secondary",
                               description=__doc__.splitlines()[0])
