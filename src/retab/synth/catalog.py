"""What each class of the synthetic mini-VOC looks like: materials of its slots, pose ranges, the
scenes it appears in and the classes it tends to appear with; and the background surfaces.

Colours of the secondary slots overlap on purpose (brown: bird, cat, chair, cow, diningtable, dog,
horse; white: aeroplane, boat, sheep, cow; any hue: car, person, sofa, ...). The main slot of every
class wears the class's *signature* (`SIGNATURES`): a saturated hue of its own, keeping the slot's
texture. Real VOC classes are easy to tell apart for a network that starts from ImageNet weights; the
demo's network starts from random weights and sees a few hundred images, and without a cue it can
learn that fast (a from-scratch ResNet-38 and ResNet-18 both stayed near the class-prior loss on
the mini-VOC without signatures) there are no CAMs to refine. The signature covers only the main
slot, so a classifier's CAM finds the most discriminative part of an object and misses the rest
(wheels, windows, heads, legs): the partial CAMs that PSA and RETAB were built to complete.
A slot may hold a tuple of specs (one is drawn per instance) or a `Derived` entry (the colour of
another slot, darker or lighter).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from retab.synth.textures import Derived, MaterialSpec as M

ALL_HUES = tuple(range(0, 360, 30))

# shared surfaces
TYRE = M(hues=(0,), hue_spread=180, sat=(0.0, 0.1), val=(0.05, 0.16), patterns=("noise",), freq=(8, 14),
         contrast=(0.2, 0.4), alt_val=(0.08, 0.15))
METAL = M(hues=(210,), hue_spread=20, sat=(0.0, 0.12), val=(0.45, 0.8), patterns=("plain", "stripes"),
          freq=(2, 4), contrast=(0.1, 0.3), gloss=(0.2, 0.5))
GLASS = M(hues=(205,), hue_spread=15, sat=(0.1, 0.35), val=(0.1, 0.35), gloss=(0.15, 0.4))
LIGHT = M(hues=(50,), hue_spread=10, sat=(0.0, 0.4), val=(0.8, 1.0))
SKIN = M(hues=(25,), hue_spread=5, sat=(0.25, 0.55), val=(0.35, 0.92))
HAIR = M(hues=(28,), hue_spread=8, sat=(0.2, 0.6), val=(0.05, 0.5), patterns=("fur",), freq=(20, 35),
         angle=(80, 100), contrast=(0.2, 0.4))
WOOD = M(hues=(28,), hue_spread=6, sat=(0.4, 0.75), val=(0.25, 0.65), patterns=("grain",), freq=(6, 12),
         angle=(-5, 5), contrast=(0.2, 0.45))
PAINT = M(hues=ALL_HUES, hue_spread=15, sat=(0.45, 0.95), val=(0.35, 0.9), gloss=(0.15, 0.4))
BRIGHT = M(hues=ALL_HUES, hue_spread=15, sat=(0.5, 1.0), val=(0.6, 1.0))
WHITE = M(hues=(40, 210), hue_spread=10, sat=(0.0, 0.12), val=(0.8, 0.98))


@dataclass(frozen=True)
class ClassStyle:
    materials: dict  # slot -> MaterialSpec | tuple[MaterialSpec, ...] | Derived
    rotation: float = 10.0  # max |rotation| in degrees
    aspect: tuple = (0.85, 1.18)  # x/y stretch range
    flip: bool = True  # may be mirrored left-right
    scenes: tuple = ("indoor",)  # scene kinds it is usually photographed in
    companions: tuple = ()  # classes that tend to appear in the same picture


# Scenes (v7): the outdoor classes person, horse, cow, sheep, train, bus and car are also seen
# against the open sky (the "sky" scene), as VOC photographs them. Before, that scene was almost only
# the aeroplanes' and birds', so when those were a fold's novel classes the base GT showed no object
# outline against the sky. What that changed over several draws of the demo: docs/measurements.md.
CLASS_STYLES: dict[str, ClassStyle] = {
    "aeroplane": ClassStyle(
        materials={
            "body": M(hues=(210, 40), hue_spread=10, sat=(0.0, 0.2), val=(0.65, 0.95), patterns=("stripes",),
                      freq=(8, 14), angle=(-5, 5), contrast=(0.08, 0.2), gloss=(0.1, 0.3)),
            "trim": PAINT, "glass": GLASS, "engine": METAL},
        rotation=35, scenes=("sky", "sky", "street"), companions=("aeroplane", "person", "car")),
    "bicycle": ClassStyle(
        materials={"tyre": TYRE, "frame": PAINT, "metal": METAL},
        rotation=8, scenes=("street", "field", "indoor"), companions=("person", "person", "car", "bicycle")),
    "bird": ClassStyle(
        materials={
            "plumage": M(hues=(30, 20, 210, 50, 0), hue_spread=10, sat=(0.1, 0.6), val=(0.3, 0.85),
                         patterns=("dots", "dots", "fur"), freq=(10, 16), angle=(-30, 30), contrast=(0.25, 0.5)),
            "head": (Derived("plumage", 1.0), M(hues=ALL_HUES, sat=(0.3, 0.9), val=(0.2, 0.9))),
            "wing": Derived("plumage", 0.65),
            "beak": M(hues=(35, 45), hue_spread=8, sat=(0.5, 0.9), val=(0.45, 0.9))},
        rotation=25, scenes=("sky", "field", "water"), companions=("bird", "bird")),
    "boat": ClassStyle(
        materials={
            "hull": M(hues=(0, 220, 30, 40), hue_spread=10, sat=(0.05, 0.85), val=(0.3, 0.95),
                      patterns=("stripes",), freq=(8, 12), angle=(85, 95), contrast=(0.1, 0.3)),
            "sail": WHITE, "cabin": WHITE, "glass": GLASS, "trim": PAINT},
        rotation=8, aspect=(0.8, 1.25), scenes=("water",), companions=("boat", "person")),
    "bottle": ClassStyle(
        materials={
            "glass": M(hues=(110, 30, 190), hue_spread=12, sat=(0.35, 0.85), val=(0.15, 0.55), gloss=(0.35, 0.7)),
            "label": M(hues=ALL_HUES, sat=(0.0, 0.8), val=(0.5, 1.0), patterns=("plain", "stripes"),
                       freq=(3, 6), angle=(85, 95), contrast=(0.3, 0.6)),
            "cap": (METAL, BRIGHT)},
        rotation=12, aspect=(0.8, 1.2), flip=False, scenes=("indoor",),
        companions=("bottle", "diningtable", "person", "pottedplant")),
    "bus": ClassStyle(
        materials={"paint": M(hues=(50, 0, 210, 120, 30), hue_spread=8, sat=(0.5, 0.9), val=(0.5, 0.92),
                              gloss=(0.1, 0.3)),
                   "glass": GLASS, "trim": BRIGHT, "tyre": TYRE, "metal": METAL},
        rotation=5, scenes=("street", "sky"), companions=("car", "person", "bus")),
    "car": ClassStyle(
        materials={"paint": (PAINT, M(hues=(0,), hue_spread=180, sat=(0.0, 0.08), val=(0.1, 0.9), gloss=(0.3, 0.6))),
                   "glass": GLASS, "light": LIGHT, "tyre": TYRE, "metal": METAL},
        rotation=6, scenes=("street", "street", "field", "sky"),
        companions=("car", "car", "bus", "person", "motorbike")),
    "cat": ClassStyle(
        materials={"fur": M(hues=(30, 25, 35), hue_spread=6, sat=(0.05, 0.6), val=(0.2, 0.85),
                            patterns=("stripes", "stripes", "noise"), freq=(7, 12), angle=(-20, 20),
                            contrast=(0.3, 0.65), alt_val=(-0.4, -0.2))},
        rotation=12, scenes=("indoor", "indoor", "field"), companions=("sofa", "chair", "dog", "person")),
    "chair": ClassStyle(
        materials={"wood": (WOOD, M(hues=ALL_HUES, sat=(0.0, 0.7), val=(0.15, 0.85))),
                   "seat": (Derived("wood", 1.0), M(hues=ALL_HUES, sat=(0.2, 0.7), val=(0.3, 0.8),
                                                    patterns=("noise",), freq=(15, 25), contrast=(0.1, 0.25)))},
        rotation=6, aspect=(0.8, 1.2), scenes=("indoor",),
        companions=("diningtable", "chair", "sofa", "person", "tvmonitor", "pottedplant")),
    "cow": ClassStyle(
        materials={
            "hide": (M(hues=(40,), hue_spread=5, sat=(0.0, 0.12), val=(0.8, 0.97), patterns=("patches",),
                       freq=(2.5, 4.5), contrast=(0.85, 1.0), alt_val=(-0.85, -0.75)),
                     M(hues=(22, 30), hue_spread=5, sat=(0.45, 0.75), val=(0.2, 0.6), patterns=("noise",),
                       freq=(5, 9), contrast=(0.15, 0.3))),
            "muzzle": M(hues=(350, 20), hue_spread=8, sat=(0.15, 0.45), val=(0.5, 0.85)),
            "horn": WHITE},
        rotation=6, scenes=("field", "sky"), companions=("cow", "cow", "sheep", "person")),
    "diningtable": ClassStyle(
        materials={"top": (WOOD, WOOD, WHITE),
                   "cloth": M(hues=(0, 210, 40), hue_spread=8, sat=(0.0, 0.75), val=(0.6, 0.98),
                              patterns=("checker", "plain"), freq=(5, 9), angle=(-5, 5), contrast=(0.4, 0.8),
                              alt_val=(0.3, 0.5), alt_sat=0.0)},
        rotation=5, aspect=(0.8, 1.25), scenes=("indoor",),
        companions=("chair", "chair", "bottle", "pottedplant", "person")),
    "dog": ClassStyle(
        materials={"fur": M(hues=(35, 28, 40), hue_spread=6, sat=(0.1, 0.7), val=(0.12, 0.9), patterns=("fur",),
                            freq=(12, 20), angle=(80, 100), contrast=(0.15, 0.35)),
                   "ear": Derived("fur", 0.6),
                   "nose": M(hues=(0,), sat=(0.0, 0.2), val=(0.02, 0.15))},
        rotation=10, scenes=("indoor", "field", "street"), companions=("person", "person", "sofa", "cat", "dog")),
    "horse": ClassStyle(
        materials={"coat": M(hues=(20, 26), hue_spread=5, sat=(0.35, 0.75), val=(0.15, 0.6),
                             patterns=("plain", "noise"), freq=(4, 8), contrast=(0.1, 0.2), gloss=(0.1, 0.25)),
                   "mane": M(hues=(20,), sat=(0.2, 0.6), val=(0.03, 0.25), patterns=("fur",), freq=(15, 25),
                             angle=(-10, 10), contrast=(0.2, 0.4), alt_val=(0.1, 0.2))},
        rotation=6, scenes=("field", "sky"), companions=("person", "person", "horse")),
    "motorbike": ClassStyle(
        materials={"paint": M(hues=(0, 210, 45, 0), hue_spread=8, sat=(0.0, 0.95), val=(0.1, 0.85), gloss=(0.3, 0.6)),
                   "seat": M(hues=(0,), sat=(0.0, 0.1), val=(0.03, 0.15)), "tyre": TYRE, "metal": METAL},
        rotation=8, scenes=("street",), companions=("person", "person", "car", "motorbike")),
    "person": ClassStyle(
        materials={"skin": SKIN, "hair": HAIR,
                   "shirt": M(hues=ALL_HUES, hue_spread=15, sat=(0.0, 0.85), val=(0.15, 0.95),
                              patterns=("plain", "plain", "stripes", "checker"), freq=(5, 12), angle=(-10, 10),
                              contrast=(0.3, 0.7), alt_val=(-0.5, 0.3)),
                   "trousers": M(hues=(220, 30, 0), hue_spread=10, sat=(0.05, 0.55), val=(0.08, 0.5),
                                 patterns=("noise",), freq=(20, 30), contrast=(0.1, 0.25)),
                   "shoes": M(hues=(0, 30), sat=(0.0, 0.5), val=(0.03, 0.4))},
        rotation=8, aspect=(0.85, 1.15), scenes=("street", "indoor", "field", "water", "sky"),
        companions=("person", "person", "bicycle", "motorbike", "horse", "chair", "sofa", "car", "dog", "bottle")),
    "pottedplant": ClassStyle(
        materials={"pot": (M(hues=(15,), hue_spread=5, sat=(0.5, 0.8), val=(0.4, 0.75)), WHITE,
                           M(hues=ALL_HUES, sat=(0.3, 0.7), val=(0.3, 0.8), gloss=(0.1, 0.3))),
                   "leaf": M(hues=(95, 120), hue_spread=8, sat=(0.45, 0.85), val=(0.2, 0.6), patterns=("noise", "stripes"),
                             freq=(10, 16), angle=(-60, 60), contrast=(0.2, 0.4), alt_val=(-0.2, 0.15)),
                   "flower": BRIGHT},
        rotation=6, flip=False, scenes=("indoor", "indoor", "street"),
        companions=("chair", "sofa", "diningtable", "tvmonitor", "bottle", "pottedplant")),
    "sheep": ClassStyle(
        materials={"wool": M(hues=(40,), hue_spread=6, sat=(0.04, 0.25), val=(0.6, 0.95), patterns=("dots",),
                             freq=(18, 28), angle=(-40, 40), contrast=(0.25, 0.45), alt_val=(-0.25, -0.12)),
                   "face": (M(hues=(30,), sat=(0.0, 0.3), val=(0.03, 0.25)), M(hues=(35,), sat=(0.1, 0.3), val=(0.6, 0.85)))},
        rotation=6, scenes=("field", "sky"), companions=("sheep", "sheep", "cow", "person")),
    "sofa": ClassStyle(
        materials={"fabric": M(hues=(0, 30, 210, 100, 270), hue_spread=10, sat=(0.1, 0.6), val=(0.18, 0.75),
                               patterns=("noise", "checker"), freq=(25, 40), angle=(-5, 5), contrast=(0.1, 0.25)),
                   "seam": Derived("fabric", 0.55), "legs": WOOD, "pillow": BRIGHT},
        rotation=5, aspect=(0.8, 1.25), scenes=("indoor",),
        companions=("person", "cat", "dog", "chair", "tvmonitor", "pottedplant")),
    "train": ClassStyle(
        materials={"paint": M(hues=(0, 210, 120, 50, 40), hue_spread=8, sat=(0.0, 0.9), val=(0.35, 0.9), gloss=(0.1, 0.3)),
                   "glass": GLASS, "trim": BRIGHT, "light": LIGHT, "tyre": TYRE},
        rotation=5, aspect=(0.8, 1.25), scenes=("street", "field", "sky"), companions=("person", "train")),
    "tvmonitor": ClassStyle(
        materials={"frame": M(hues=(0, 210), sat=(0.0, 0.1), val=(0.04, 0.7), gloss=(0.2, 0.4)),
                   "screen": (M(hues=ALL_HUES, sat=(0.3, 0.9), val=(0.5, 0.95), patterns=("patches", "noise"),
                                freq=(2, 5), angle=(-90, 90), contrast=(0.6, 1.0), alt_hue=150, alt_val=(-0.3, 0.1)),
                              M(hues=(220,), sat=(0.2, 0.5), val=(0.08, 0.3), gloss=(0.3, 0.5)))},
        rotation=5, flip=False, scenes=("indoor",), companions=("chair", "sofa", "person", "pottedplant", "tvmonitor")),
}

# ----------------------------------------------------------------------------- background surfaces

SKY = M(hues=(210, 200), hue_spread=8, sat=(0.15, 0.55), val=(0.65, 0.97), patterns=("noise", "plain"),
        freq=(1.5, 3), contrast=(0.2, 0.5), alt_val=(0.05, 0.2), alt_sat=0.2)
GRASS = M(hues=(90, 60), hue_spread=12, sat=(0.3, 0.7), val=(0.25, 0.6), patterns=("fur", "noise"),
          freq=(20, 45), angle=(80, 100), contrast=(0.3, 0.6), alt_val=(-0.25, 0.1))
FOLIAGE = M(hues=(100, 80, 40), hue_spread=15, sat=(0.25, 0.7), val=(0.15, 0.55), patterns=("noise", "patches"),
            freq=(4, 10), contrast=(0.4, 0.8), alt_val=(-0.3, 0.3))
WATER = M(hues=(200, 180, 215), hue_spread=8, sat=(0.2, 0.6), val=(0.3, 0.75), patterns=("stripes", "noise"),
          freq=(15, 35), angle=(85, 95), contrast=(0.1, 0.35), alt_val=(0.05, 0.25))
ROAD = M(hues=(30, 210), hue_spread=10, sat=(0.0, 0.12), val=(0.25, 0.6), patterns=("noise",), freq=(15, 40),
         contrast=(0.1, 0.3), alt_val=(-0.15, 0.15))
WALL = M(hues=ALL_HUES, hue_spread=10, sat=(0.03, 0.35), val=(0.45, 0.92), patterns=("plain", "stripes", "noise", "dots"),
         freq=(6, 20), angle=(-3, 3), contrast=(0.05, 0.2), alt_val=(-0.2, 0.1))
FLOOR = (WOOD, M(hues=ALL_HUES, sat=(0.0, 0.4), val=(0.2, 0.8), patterns=("checker", "noise"), freq=(6, 14),
                 angle=(-10, 10), contrast=(0.15, 0.45), alt_val=(-0.3, 0.2)))
SOIL = M(hues=(30,), hue_spread=8, sat=(0.2, 0.55), val=(0.2, 0.55), patterns=("noise",), freq=(10, 30),
         contrast=(0.2, 0.45))
ANY_SURFACE = M(hues=ALL_HUES, hue_spread=20, sat=(0.0, 0.8), val=(0.1, 0.95),
                patterns=("plain", "stripes", "checker", "dots", "patches", "noise", "grain", "fur"),
                freq=(2, 15), angle=(-90, 90), contrast=(0.1, 0.6), alt_val=(-0.4, 0.3), gloss=(0.0, 0.2))

# scene -> (horizon height range as a fraction of H, upper surfaces, lower surfaces, clutter count range)
SCENES = {
    "sky": ((0.7, 1.05), (SKY,), (GRASS, ROAD, WATER, FOLIAGE), (1, 3)),
    "water": ((0.2, 0.5), (SKY, FOLIAGE), (WATER,), (2, 5)),
    "field": ((0.15, 0.45), (SKY, FOLIAGE), (GRASS, GRASS, SOIL), (2, 6)),
    "street": ((0.35, 0.7), (WALL, SKY, FOLIAGE), (ROAD,), (3, 8)),
    "indoor": ((0.45, 0.8), (WALL,), FLOOR, (3, 8)),
    "abstract": ((0.0, 1.0), (FOLIAGE, ANY_SURFACE, WALL), (FOLIAGE, ANY_SURFACE, ROAD), (3, 8)),
}


# ----------------------------------------------------------------------------- class signatures

SIGNATURE_SAT = (0.7, 1.0)  # more saturated than anything else in a picture (BACKGROUND_MAX_SAT)
SIGNATURE_VAL = (0.45, 0.95)
SIGNATURE_HUE_SPREAD = 3.0
# Every surface that is not a signature (backgrounds, clutter, and the other slots of every class:
# wood, fur, skin, paint, trims) stays at or below this saturation. Without that cap the warm
# signatures collided with the browns of wood, fur, coats and skin (saturation up to 0.75) and the
# reds and yellows of paints: the CAMs of the classes wearing them (fold 0: aeroplane, bicycle,
# bird, boat, bottle) found other classes' parts and context (novel CAM mIoU 13 vs 56 for fold 3).
BACKGROUND_MAX_SAT = 0.5

# class -> main slot; the hue of class i (VOC order) is 18 * (4 * (i % 5) + i // 5) degrees: the five
# classes of each fold (SPEC: i // 5) lie 72 degrees apart, and hue neighbours come from other folds
# (a block of adjacent hues for one fold made its classes each other's look-alikes).
SIGNATURE_SLOTS = {
    "aeroplane": "body", "bicycle": "frame", "bird": "plumage", "boat": "hull", "bottle": "glass",
    "bus": "paint", "car": "paint", "cat": "fur", "chair": "wood", "cow": "hide", "diningtable": "top",
    "dog": "fur", "horse": "coat", "motorbike": "paint", "person": "shirt", "pottedplant": "leaf",
    "sheep": "wool", "sofa": "fabric", "train": "paint", "tvmonitor": "screen",
}
SIGNATURES = {name: (slot, 18.0 * (4 * (i % 5) + i // 5)) for i, (name, slot) in enumerate(SIGNATURE_SLOTS.items())}


def signature_spec(spec: M, hue: float) -> M:
    """`spec` (its texture kept) in the signature colour."""
    return replace(spec, hues=(hue,), hue_spread=SIGNATURE_HUE_SPREAD, sat=SIGNATURE_SAT, val=SIGNATURE_VAL,
                   alt_sat=1.0, alt_hue=0.0, alt_val=(-0.3, -0.15))


def desaturated(spec):
    """`spec` (or a tuple of them) capped at BACKGROUND_MAX_SAT; a Derived slot follows its source."""
    if isinstance(spec, tuple):
        return tuple(desaturated(s) for s in spec)
    if isinstance(spec, Derived):
        return spec
    return replace(spec, sat=(min(spec.sat[0], BACKGROUND_MAX_SAT), min(spec.sat[1], BACKGROUND_MAX_SAT)))


def _with_signature(style: ClassStyle, slot: str, hue: float) -> ClassStyle:
    """The main slot in the signature colour, every other slot capped below it."""
    specs = style.materials[slot]
    specs = tuple(signature_spec(s, hue) for s in specs) if isinstance(specs, tuple) else signature_spec(specs, hue)
    others = {name: desaturated(spec) for name, spec in style.materials.items() if name != slot}
    return replace(style, materials={**others, slot: specs})


CLASS_STYLES = {name: _with_signature(style, *SIGNATURES[name]) for name, style in CLASS_STYLES.items()}


# Backgrounds and clutter never reach a signature's saturation.
ANY_SURFACE = desaturated(ANY_SURFACE)
SCENES = {name: (horizon, desaturated(tuple(up)), desaturated(tuple(low)), clutter)
          for name, (horizon, up, low, clutter) in SCENES.items()}
