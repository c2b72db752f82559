"""The label space of score dicts (SPEC 5), checked against a picture's image-level classes.

Two formats share the `.npy` dict layout and differ only in what a key means:
- a CAM dict (infer_cls --out_cam, convert_cams): keys are the picture's class indices 0..19,
  no background; its maps are max-normalised (each at most 1);
- a dict with background (a CRF label dict, a walk's --out_rw_cam): key 0 is the background and
  the other keys are label values 1..20 (class index + 1).
Read as the other format, every label shifts by one class (background becomes aeroplane), and
the stage would still run to the end; so each reader checks the keys against the picture's
classes first and says which format the keys look like.
"""
from __future__ import annotations

import numpy as np

from retab import voc
from retab.misc.errors import RetabError

CAM_DICT = "a CAM dict (class indices 0..19, no background key)"
BACKGROUND_DICT = "a dict with background (key 0 plus label values 1..20: a CRF dict or a walk's --out_rw_cam)"
CAM_PEAK_TOLERANCE = 1e-3  # CAM dicts are divided by (max + 1e-5): a map above 1 + this was not normalised


def dict_keys(scores: dict, source) -> list[int]:
    """The sorted integer keys of a score dict; any other key is an error naming the file."""
    keys = []
    for key in scores:
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise RetabError(f"{source}: key {key!r} is not an integer label (a score dict maps integers to maps)")
        keys.append(int(key))
    return sorted(keys)


def expected_keys(classes, with_background: bool) -> list[int]:
    """The keys a dict of the picture with these class indices holds in each format."""
    classes = sorted(int(k) for k in classes)
    return [0] + [k + 1 for k in classes] if with_background else classes


def looks_like(keys, classes) -> str:
    """Which format `keys` look like for a picture of these class indices, in words."""
    if keys == expected_keys(classes, True):
        return BACKGROUND_DICT
    if keys == expected_keys(classes, False):
        return CAM_DICT
    if keys == [k + 1 for k in sorted(classes)]:
        return "label values 1..20 without the background key 0"
    return "neither format for this picture"


def classes_of(labels) -> list[int]:
    """Class indices of an image-level label vector float32[20]."""
    return [int(k) for k in np.flatnonzero(np.asarray(labels))]


def check_keys(scores: dict, labels, with_background: bool, source, reader: str) -> list[int]:
    """The keys of `scores`, checked to be exactly those of the picture's classes (`labels`, its
    image-level vector) in the format the `reader` (a stage, in words) reads; else a RetabError
    saying which format the keys look like."""
    keys = dict_keys(scores, source)
    classes = classes_of(labels)
    expected = expected_keys(classes, with_background)
    if keys != expected:
        names = ", ".join(voc.CATEGORIES[k] for k in classes) or "none"
        raise RetabError(f"{source}: keys {keys} look like {looks_like(keys, classes)}, but {reader} reads "
                         f"{BACKGROUND_DICT if with_background else CAM_DICT}: keys {expected} for this picture "
                         f"(classes: {names})")
    return keys


def check_cam_peak(peak: float, key: int, source) -> None:
    """A CAM map (whose maximum is `peak`) must be max-normalised; the error says how to make it so."""
    if peak > 1 + CAM_PEAK_TOLERANCE:
        raise RetabError(f"{source}: the CAM of class {key} peaks at {peak:.4g}, but CAM dicts are max-normalised "
                         "(each map at most 1): normalise them with `retab convert_cams --format cam_dict "
                         "--in_dir DIR --out_dir NEW_DIR`")
