"""Dense-CRF refinement of CAMs into the la / ha label score maps (SPEC 3, "CRF labels")."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retab.misc.errors import RetabError
from retab.published import CRF_HIGH_ALPHA, CRF_LOW_ALPHA

CRF_ALPHAS = (CRF_LOW_ALPHA, CRF_HIGH_ALPHA)  # "la" (low alpha) and "ha" (high alpha)
# Probabilities are clipped to this before the log, so a zero score costs a finite energy.
PROB_FLOOR = 1e-5


def dense_crf(img: np.ndarray, probs: np.ndarray, iterations: int = 10, *,
              gaussian_sxy: float = 3, gaussian_compat: float = 3,
              bilateral_sxy: float = 80, bilateral_srgb: float = 13,
              bilateral_compat: float = 10) -> np.ndarray:
    """Mean-field marginals (C, H, W) float32 of a fully connected CRF on an RGB image.

    img: uint8 HxWx3; probs: (C, H, W) label probabilities; unary = -log(clip(probs, 1e-5, 1)).
    Pairwise terms: a Gaussian (position) kernel and a bilateral (position + colour) kernel.
    """
    import pydensecrf.densecrf as dcrf

    img = np.asarray(img)
    probs = np.asarray(probs, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise RetabError(f"dense_crf: expected a uint8 HxWx3 image, got {img.dtype} {img.shape}")
    if probs.ndim != 3 or probs.shape[1:] != img.shape[:2]:
        raise RetabError(f"dense_crf: probabilities {probs.shape} do not match image {img.shape}")
    n_labels, height, width = probs.shape
    # pydensecrf reads raw buffers: both arrays must be C-contiguous, unary as (C, H*W) float32;
    # it also refuses read-only images (as np.asarray of a PIL image is), hence the writable copy.
    unary = np.ascontiguousarray(-np.log(np.clip(probs, PROB_FLOOR, 1.0)).reshape(n_labels, -1))
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb,
                             rgbim=np.require(img, requirements=("C", "W")), compat=bilateral_compat)
    marginals = crf.inference(iterations)
    return np.asarray(marginals, dtype=np.float32).reshape(n_labels, height, width)


def crf_label_dict(img: np.ndarray, cam_dict: dict, alpha: float) -> dict[int, np.ndarray]:
    """{0: background, class index + 1: map} after the CRF, for the classes of cam_dict.

    Background score = (1 - max over the present class maps) ** alpha: a larger alpha makes the
    background weaker wherever any object responds at all."""
    classes = sorted(cam_dict)
    if not classes:
        height, width = np.asarray(img).shape[:2]
        return {0: np.ones((height, width), dtype=np.float32)}
    maps = np.stack([np.asarray(cam_dict[k], dtype=np.float32) for k in classes])
    background = np.power(1 - maps.max(axis=0), alpha)
    marginals = dense_crf(img, np.concatenate([background[None], maps]))
    labelled = {0: marginals[0]}
    for i, k in enumerate(classes):
        labelled[int(k) + 1] = marginals[i + 1]
    return labelled


def crf_label_dicts(img: np.ndarray, cam_dict: dict,
                    alphas: Sequence[float] = CRF_ALPHAS) -> dict[float, dict[int, np.ndarray]]:
    """{alpha: crf_label_dict(img, cam_dict, alpha)} for each alpha (default la 4, ha 32)."""
    return {alpha: crf_label_dict(img, cam_dict, alpha) for alpha in alphas}
