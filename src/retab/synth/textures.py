"""Surfaces of the synthetic mini-VOC: colours, smooth noise and periodic patterns (vectorised numpy).

A `MaterialSpec` describes how one kind of surface varies (hue centres and spread, saturation and
value ranges, pattern kinds, frequency, orientation and contrast ranges); `sample_material` draws
one concrete `Material` from it, and `material_colour` paints that material at given surface
coordinates. Coordinates are in "object units" (the object's longest extent is 1), so a pattern
keeps its look at every object size and turns with the object.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

NOISE_GRID = 16  # side of the periodic random grid behind value noise


@dataclass(frozen=True)
class MaterialSpec:
    """The distribution of one surface kind; every range is (low, high), drawn uniformly."""

    hues: tuple = (0.0,)  # hue centres in degrees; one is drawn per instance
    hue_spread: float = 10.0  # standard deviation of the hue around its centre, degrees
    sat: tuple = (0.3, 0.7)
    val: tuple = (0.4, 0.8)
    patterns: tuple = ("plain",)  # one is drawn per instance, see `pattern_field`
    freq: tuple = (3.0, 6.0)  # cycles per object unit
    angle: tuple = (-10.0, 10.0)  # pattern orientation in the object frame, degrees
    contrast: tuple = (0.15, 0.4)  # how far the pattern moves from the base colour to the alt colour
    alt_val: tuple = (-0.3, -0.1)  # value offset of the pattern (alt) colour
    alt_hue: float = 0.0  # hue offset of the alt colour, degrees
    alt_sat: float = 1.0  # saturation factor of the alt colour
    gloss: tuple = (0.0, 0.0)  # strength of a specular highlight


@dataclass(frozen=True)
class Derived:
    """A slot painted like another slot of the same object, with its colours scaled by `gain`."""

    source: str
    gain: float


@dataclass
class Material:
    base: np.ndarray  # RGB in [0, 1]
    alt: np.ndarray
    pattern: str
    freq: float
    angle: float  # radians
    contrast: float
    phase: float
    gloss: float
    grid: np.ndarray  # NOISE_GRID x NOISE_GRID values in [0, 1]

    def scaled(self, gain: float) -> "Material":
        return Material(self.base * gain, self.alt * gain, self.pattern, self.freq, self.angle,
                        self.contrast, self.phase, self.gloss, self.grid)


def hsv_colour(hue_deg: float, sat: float, val: float) -> np.ndarray:
    sat = min(max(sat, 0.0), 1.0)
    val = min(max(val, 0.0), 1.0)
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, sat, val), np.float32)


def sample_material(spec: MaterialSpec, rng: np.random.Generator) -> Material:
    hue = float(rng.choice(spec.hues)) + rng.normal(0.0, spec.hue_spread)
    sat = rng.uniform(*spec.sat)
    val = rng.uniform(*spec.val)
    alt = hsv_colour(hue + spec.alt_hue, sat * spec.alt_sat, val + rng.uniform(*spec.alt_val))
    return Material(
        base=hsv_colour(hue, sat, val),
        alt=alt,
        pattern=str(rng.choice(spec.patterns)),
        freq=rng.uniform(*spec.freq),
        angle=np.deg2rad(rng.uniform(*spec.angle)),
        contrast=rng.uniform(*spec.contrast),
        phase=rng.uniform(0.0, 2 * np.pi),
        gloss=rng.uniform(*spec.gloss),
        grid=rng.random((NOISE_GRID, NOISE_GRID), dtype=np.float32),
    )


def value_noise(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1]: the periodic `grid` interpolated (smoothstep weights) at (x, y) in cells."""
    gh, gw = grid.shape
    wrapped = np.pad(grid, ((0, 1), (0, 1)), mode="wrap").ravel()  # one extra row/column: no modulo for +1
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    corner = (y0.astype(np.int32) % gh) * (gw + 1) + x0.astype(np.int32) % gw
    top = wrapped.take(corner)
    top += (wrapped.take(corner + 1) - top) * fx
    bottom = wrapped.take(corner + gw + 1)
    bottom += (wrapped.take(corner + gw + 2) - bottom) * fx
    return (top + (bottom - top) * fy).astype(np.float32, copy=False)


def pattern_field(mat: Material, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the surface shows the alt colour, in [0, 1], at object coordinates (u, v)."""
    if mat.pattern == "plain":
        return np.zeros(u.shape, np.float32)
    c, s = np.cos(mat.angle), np.sin(mat.angle)
    ru = (u * c + v * s) * mat.freq
    rv = (v * c - u * s) * mat.freq
    two_pi = 2 * np.pi
    if mat.pattern == "stripes":  # fairly crisp bands across ru
        t = 0.5 + 0.5 * np.clip(1.8 * np.sin(two_pi * ru + mat.phase), -1, 1)
    elif mat.pattern == "checker":
        t = 0.5 + 0.5 * np.clip(3.0 * np.sin(two_pi * ru + mat.phase) * np.sin(two_pi * rv), -1, 1)
    elif mat.pattern == "dots":  # round spots on a lattice, alternate rows shifted
        row = np.floor(rv)
        cu = ru + 0.5 * (row % 2) + mat.phase
        du = cu - np.floor(cu) - 0.5
        dv = rv - row - 0.5
        t = np.clip((0.32 - np.sqrt(du * du + dv * dv)) * 10.0, 0, 1)
    elif mat.pattern == "patches":  # large blotches (cow hide, camouflage)
        n = value_noise(mat.grid, ru + mat.phase, rv)
        t = np.clip((n - 0.5) * 7.0 + 0.5, 0, 1)
    elif mat.pattern == "fur":  # streaks: fine across ru, long along rv
        t = 0.65 * value_noise(mat.grid, ru * 2.0, rv * 0.3) + 0.35 * value_noise(mat.grid, ru * 4.0 + 5, rv)
    elif mat.pattern == "grain":  # wood: warped stripes
        t = 0.5 + 0.5 * np.sin(two_pi * rv + 5.0 * value_noise(mat.grid, ru * 0.3, rv * 0.3) + mat.phase)
    elif mat.pattern == "noise":  # two octaves of isotropic noise
        t = 0.65 * value_noise(mat.grid, ru, rv) + 0.35 * value_noise(mat.grid, 2.1 * ru + 7, 2.1 * rv + 3)
    else:
        raise ValueError(f"unknown pattern {mat.pattern!r}")
    return t.astype(np.float32)


def material_colour(mat: Material, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB (h, w, 3) of the material at object coordinates (u, v)."""
    t = (mat.contrast * pattern_field(mat, u, v))[..., None]
    return mat.base * (1 - t) + mat.alt * t
