"""Shape families of the synthetic mini-VOC: one builder per VOC class, plus background distractors.

A builder returns a list of `Part`s in the object's own frame (x right, y down, roughly centred,
longest extent about 1): polygons filled with the material of a named slot, drawn in order, or
holes (slot None) that clear what was drawn before them (the inside of a bicycle wheel, the gap
between chair slats). `thin(w)` widens a bar to the thinnest width still visible at the object's
pixel size. Each builder draws its own random proportions, so no two instances are alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Part:
    points: np.ndarray  # (n, 2) polygon in object coordinates
    slot: str | None  # material slot; None = hole


# ----------------------------------------------------------------------------- primitives

def ellipse(cx, cy, rx, ry, angle_deg=0.0, n=28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return _rotate(np.stack([rx * np.cos(t), ry * np.sin(t)], 1), angle_deg) + (cx, cy)


def box(cx, cy, w, h, angle_deg=0.0) -> np.ndarray:
    pts = np.array([(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)])
    return _rotate(pts, angle_deg) + (cx, cy)


def rounded_box(cx, cy, w, h, r) -> np.ndarray:
    """Axis-aligned box with quarter-circle corners of radius r."""
    r = min(r, w / 2, h / 2)
    corners = [(w / 2 - r, h / 2 - r, 0), (-w / 2 + r, h / 2 - r, 90),
               (-w / 2 + r, -h / 2 + r, 180), (w / 2 - r, -h / 2 + r, 270)]
    pts = []
    for x, y, start in corners:
        a = np.deg2rad(start + np.linspace(0, 90, 5))
        pts.append(np.stack([x + r * np.cos(a), y + r * np.sin(a)], 1))
    return np.concatenate(pts) + (cx, cy)


def bar(x0, y0, x1, y1, width) -> np.ndarray:
    """A straight limb from (x0, y0) to (x1, y1)."""
    d = np.array([x1 - x0, y1 - y0], float)
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * width / 2
    p0, p1 = np.array([x0, y0]), np.array([x1, y1])
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n])


def polygon(*pts) -> np.ndarray:
    return np.array(pts, float)


def mirror_y(pts: np.ndarray) -> np.ndarray:
    return pts * (1, -1)


def blob(rng, cx, cy, rx, ry, n=9, jitter=0.35) -> np.ndarray:
    """An irregular rounded outline: random radii on n spokes, smoothed twice (Chaikin)."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = 1 + rng.uniform(-jitter, jitter, n)
    pts = np.stack([rx * radius * np.cos(t), ry * radius * np.sin(t)], 1)
    for _ in range(2):
        nxt = np.roll(pts, -1, 0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], 1).reshape(-1, 2)
    return pts + (cx, cy)


def _rotate(pts: np.ndarray, angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return pts @ np.array([[c, s], [-s, c]])


def _parts(*items) -> list[Part]:
    return [Part(np.asarray(p, float), slot) for p, slot in items]


def _legs(xs, top, bottom, width, slot, rng, splay=0.03):
    """Vertical limbs with a little random splay."""
    return [(bar(x, top, x + rng.uniform(-splay, splay), bottom, width), slot) for x in xs]


def _wheel(cx, cy, r, rng, hub="metal"):
    items = [(ellipse(cx, cy, r, r), "tyre")]
    if hub:
        items.append((ellipse(cx, cy, r * rng.uniform(0.4, 0.55), r * rng.uniform(0.4, 0.55)), hub))
    return items


# ----------------------------------------------------------------------------- the 20 classes

def aeroplane(rng, thin):
    side_view = rng.random() < 0.4
    fw = rng.uniform(0.05, 0.08)  # fuselage half-width
    if side_view:
        fh = fw * 1.4
        items = [
            (polygon((-0.34, 0), (-0.5, -0.3), (-0.42, -0.3), (-0.2, 0)), "trim"),  # fin
            (ellipse(0, 0, 0.5, fh), "body"),
            (polygon((0.05, 0.02), (-0.18, 0.02), (-0.28, 0.12), (-0.2, 0.12)), "body"),  # wing
            (bar(-0.3, -0.01, 0.3, -0.01, thin(fh * 0.35)), "trim"),
            (ellipse(0.42, -fh * 0.35, 0.05, fh * 0.4), "glass"),
        ]
        if rng.random() < 0.6:
            items.append((ellipse(-0.05, fh + 0.03, 0.09, thin(0.035)), "engine"))
        return _parts(*items)
    span = rng.uniform(0.75, 1.0)
    root = rng.uniform(-0.05, 0.1)
    chord = rng.uniform(0.12, 0.2)
    sweep = rng.uniform(0.05, 0.22)
    wing = polygon((root + chord / 2, 0), (root - sweep + chord * 0.3, -span / 2),
                   (root - sweep - chord * 0.3, -span / 2), (root - chord / 2, 0))
    tail = polygon((-0.36, 0), (-0.45, -0.16), (-0.5, -0.16), (-0.47, 0))
    items = [(wing, "body"), (mirror_y(wing), "body"), (tail, "trim"), (mirror_y(tail), "trim")]
    if rng.random() < 0.6:
        for side in (-1, 1):
            items.append((ellipse(root - 0.05, side * span * 0.2, 0.07, thin(0.028)), "engine"))
    items += [(ellipse(0, 0, 0.5, fw), "body"), (ellipse(0.41, 0, 0.06, fw * 0.6), "glass")]
    return _parts(*items)


def bicycle(rng, thin):
    r = rng.uniform(0.17, 0.22)
    half_base = rng.uniform(0.27, 0.33)
    # Tyres and tubes about twice their true share of the length: VOC's bicycles, photographed at
    # ~500 px, have tyres one to two cells of the networks' 8-px grid wide; drawn in proportion on
    # these 2.7x smaller pictures they were 3-5 px, and a stride-8 labelling could reach at most 31
    # IoU on them (the GT pooled to the grid and upsampled, `tools/walk_diagnostics.py ceiling`), 87 now.
    tyre = thin(rng.uniform(0.07, 0.09))
    width = thin(rng.uniform(0.045, 0.06))
    rear, front = (-half_base, 0.2), (half_base, 0.2)
    crank = (-half_base + 2 * half_base * 0.42, 0.22)
    seat = (-half_base + 2 * half_base * 0.3, 0.2 - rng.uniform(0.32, 0.38))
    head = (half_base - 2 * half_base * 0.1, 0.2 - rng.uniform(0.33, 0.4))
    items = []
    for cx, cy in (rear, front):
        items += [(ellipse(cx, cy, r, r), "tyre"), (ellipse(cx, cy, r - tyre, r - tyre), None)]
    for a, b in ((rear, crank), (rear, seat), (seat, crank), (seat, head), (head, crank), (head, front)):
        items.append((bar(*a, *b, width), "frame"))
    grip = (head[0] - 0.04, head[1] - 0.08)
    items += [
        (bar(*head, *grip, width), "metal"),
        (bar(grip[0] - 0.06, grip[1], grip[0] + 0.06, grip[1], thin(0.025)), "metal"),
        (polygon((seat[0] - 0.07, seat[1] - 0.04), (seat[0] + 0.06, seat[1] - 0.05),
                 (seat[0] + 0.05, seat[1] - 0.01), (seat[0] - 0.06, seat[1])), "tyre"),
        (ellipse(*crank, thin(0.035), thin(0.035)), "metal"),
    ]
    return _parts(*items)


def bird(rng, thin):
    flying = rng.random() < 0.3
    body_h = rng.uniform(0.13, 0.18)
    head_r = rng.uniform(0.09, 0.13)
    items = [
        (polygon((-0.2, 0.03), (-0.5, rng.uniform(-0.06, 0.04)), (-0.48, rng.uniform(0.1, 0.18)), (-0.18, 0.12)), "wing"),
        (ellipse(0, 0.05, 0.3, body_h, rng.uniform(-20, 0)), "plumage"),
        (ellipse(0.27, -0.1, head_r, head_r * 0.95), "head"),
        (polygon((0.25 + head_r * 0.8, -0.13), (0.5, -0.1 + rng.uniform(-0.03, 0.03)), (0.26 + head_r * 0.8, -0.06)), "beak"),
    ]
    if flying:
        tip = (rng.uniform(-0.25, 0.05), rng.uniform(-0.5, -0.35))
        items.append((polygon((-0.14, 0.0), (0.12, 0.0), (tip[0] + 0.12, tip[1] + 0.05), tip), "wing"))
    else:
        items.append((ellipse(-0.04, 0.04, 0.2, body_h * 0.55, -15), "wing"))
        for x in (0.0, 0.07):
            items.append((bar(x, 0.15, x + rng.uniform(-0.02, 0.04), 0.38, thin(0.02)), "beak"))
    return _parts(*items)


def boat(rng, thin):
    bow = rng.uniform(-0.08, 0.0)
    items = [(polygon((-0.5, 0), (0.5, bow), (0.36, 0.2), (-0.44, 0.2)), "hull")]
    if rng.random() < 0.5:  # sailing boat
        mast_h = rng.uniform(0.6, 0.8)
        items += [
            (bar(0, 0.02, 0, -mast_h, thin(0.02)), "trim"),
            (polygon((0.02, -mast_h + 0.03), (0.02, -0.04), (rng.uniform(0.3, 0.42), -0.04)), "sail"),
            (polygon((-0.02, -mast_h * 0.85), (-0.02, -0.04), (-rng.uniform(0.22, 0.34), -0.04)), "sail"),
        ]
    else:  # motor boat: cabin with windows
        cw, ch = rng.uniform(0.35, 0.5), rng.uniform(0.13, 0.2)
        cx = rng.uniform(-0.15, 0.05)
        items.append((box(cx, -ch / 2 + 0.01, cw, ch), "cabin"))
        for i in range(3):
            items.append((box(cx - cw * 0.3 + i * cw * 0.3, -ch * 0.55, cw * 0.18, ch * 0.35), "glass"))
    if rng.random() < 0.5:
        items.append((polygon((-0.49, 0.03), (0.47, bow + 0.03), (0.45, bow + 0.06), (-0.48, 0.06)), "trim"))
    return _parts(*items)


def bottle(rng, thin):
    w = rng.uniform(0.24, 0.34)
    neck_w = w * rng.uniform(0.3, 0.42)
    items = [
        (rounded_box(0, 0.15, w, 0.7, w * 0.2), "glass"),
        (ellipse(0, -0.2, w / 2, w * rng.uniform(0.3, 0.45)), "glass"),
        (box(0, -0.36, neck_w, 0.24), "glass"),
        (box(0, -0.48, neck_w * 1.2, 0.05), "cap"),
    ]
    if rng.random() < 0.65:
        items.append((box(0, rng.uniform(0.05, 0.25), w, rng.uniform(0.18, 0.3)), "label"))
    return _parts(*items)


def bus(rng, thin):
    h = rng.uniform(0.42, 0.55)
    n_win = int(rng.integers(4, 8))
    win_w = 0.8 / n_win * 0.8
    items = [(rounded_box(0, 0, 1, h, 0.05), "paint")]
    for i in range(n_win):
        items.append((box(-0.42 + (i + 0.5) * 0.8 / n_win, -h * 0.2, win_w, h * 0.3), "glass"))
    items.append((box(0.465, -h * 0.08, 0.05, h * 0.55), "glass"))
    if rng.random() < 0.5:
        items.append((box(0, h * 0.15, 1.0, h * 0.07), "trim"))
    wr = rng.uniform(0.075, 0.1)
    for x in (-0.3, 0.3):
        items += _wheel(x, h / 2, wr, rng)
    return _parts(*items)


def car(rng, thin):
    h = rng.uniform(0.2, 0.27)
    roof = rng.uniform(0.13, 0.19)
    back, front = rng.uniform(-0.36, -0.26), rng.uniform(0.16, 0.26)
    top = -h / 2 - roof
    items = [
        (polygon((back, -h / 2 + 0.01), (front, -h / 2 + 0.01), (front - 0.12, top), (back + 0.08, top)), "paint"),
        (rounded_box(0, 0, 1, h, h * 0.35), "paint"),
        (polygon((back + 0.04, -h / 2), (-0.04, -h / 2), (-0.04, top + 0.025), (back + 0.1, top + 0.025)), "glass"),
        (polygon((0.0, -h / 2), (front - 0.04, -h / 2), (front - 0.13, top + 0.025), (0.0, top + 0.025)), "glass"),
    ]
    if rng.random() < 0.7:
        items.append((box(0.47, -h * 0.15, 0.05, h * 0.25), "light"))
    wr = rng.uniform(0.1, 0.13)
    for x in (-0.3, 0.3):
        items += _wheel(x, h / 2, wr, rng)
    return _parts(*items)


def _cat_head(cx, cy, r, rng):
    ear = r * rng.uniform(0.9, 1.2)
    return [
        (polygon((cx - r * 0.95, cy - r * 0.3), (cx - r * 0.7, cy - r - ear), (cx - r * 0.05, cy - r * 0.7)), "fur"),
        (polygon((cx + r * 0.05, cy - r * 0.7), (cx + r * 0.7, cy - r - ear), (cx + r * 0.95, cy - r * 0.3)), "fur"),
        (ellipse(cx, cy, r, r * 0.9), "fur"),
    ]


def cat(rng, thin):
    r = rng.uniform(0.1, 0.14)
    if rng.random() < 0.4:  # sitting, seen from the front-side
        items = [
            (bar(-0.1, 0.38, -0.35, rng.uniform(0.1, 0.3), thin(0.05)), "fur"),  # tail
            (ellipse(0, 0.13, rng.uniform(0.17, 0.22), 0.27), "fur"),
            (bar(0.06, 0.05, 0.08, 0.4, thin(0.06)), "fur"),
        ]
        items += _cat_head(0.04, -0.2, r, rng)
        return _parts(*items)
    tail_mid = (-0.45, rng.uniform(-0.1, 0.05))
    items = [
        (bar(-0.28, -0.02, *tail_mid, thin(0.045)), "fur"),
        (bar(*tail_mid, -0.5, rng.uniform(-0.3, -0.1), thin(0.04)), "fur"),
    ]
    items += _legs((-0.24, -0.14, 0.12, 0.2), 0.05, 0.3, thin(0.05), "fur", rng)
    items.append((ellipse(-0.04, 0.02, 0.3, rng.uniform(0.11, 0.15)), "fur"))
    items += _cat_head(0.3, -0.08, r, rng)
    return _parts(*items)


def chair(rng, thin):
    leg = thin(rng.uniform(0.035, 0.05))
    seat_y = rng.uniform(-0.02, 0.05)
    items = []
    if rng.random() < 0.5:  # front view
        half = rng.uniform(0.18, 0.24)
        items += _legs((-half + 0.05, half - 0.05), seat_y, 0.4, leg, "wood", rng, 0.01)
        items += _legs((-half, half), seat_y, 0.48, leg, "wood", rng, 0.01)
        items += [(bar(x, seat_y, x, -0.5, leg), "wood") for x in (-half + 0.02, half - 0.02)]
        panel = box(0, -0.38, 2 * half - 0.04, rng.uniform(0.12, 0.22))
        items.append((panel, "wood"))
        if rng.random() < 0.4:  # slats: gaps show the background
            for x in (-half / 3, half / 3):
                items.append((box(x, -0.38, thin(0.03), 0.08), None))
        items.append((box(0, seat_y, 2 * half + 0.04, thin(0.08)), "seat"))
    else:  # side view
        back_x, front_x = -0.22, rng.uniform(0.18, 0.25)
        items += [
            (bar(back_x, -0.5, back_x + rng.uniform(0.0, 0.05), 0.48, leg), "wood"),
            (bar(front_x, seat_y, front_x, 0.48, leg), "wood"),
            (box(back_x + 0.02, -0.35, leg * 1.6, rng.uniform(0.15, 0.3)), "wood"),
            (box((back_x + front_x) / 2, seat_y, front_x - back_x + 0.06, thin(0.07)), "seat"),
        ]
    return _parts(*items)


def cow(rng, thin):
    body_h = rng.uniform(0.28, 0.34)
    head_up = rng.uniform(-0.1, 0.06)
    items = [(bar(-0.35, -0.1, -0.4, 0.2, thin(0.025)), "hide")]
    items += _legs((-0.28, -0.19, 0.17, 0.26), 0.1, 0.42, thin(0.06), "hide", rng)
    items += [
        (rounded_box(0, 0, 0.72, body_h, 0.1), "hide"),
        (polygon((0.3, -0.1 + head_up), (0.45, -0.14 + head_up), (0.54, 0.04 + head_up), (0.42, 0.08 + head_up)), "hide"),
        (ellipse(0.5, 0.05 + head_up, 0.05, 0.04), "muzzle"),
        (ellipse(0.38, -0.13 + head_up, 0.06, 0.025, -20), "hide"),
    ]
    if rng.random() < 0.5:
        items.append((polygon((0.42, -0.13 + head_up), (0.44, -0.22 + head_up), (0.46, -0.13 + head_up)), "horn"))
    if rng.random() < 0.5:
        items.append((ellipse(0.05, body_h / 2, 0.06, 0.04), "muzzle"))
    return _parts(*items)


def diningtable(rng, thin):
    leg = thin(rng.uniform(0.03, 0.05))
    items = []
    cloth = rng.random() < 0.35
    if rng.random() < 0.3:  # round table on a pedestal
        items += [(bar(0, -0.1, 0, 0.3, thin(0.07)), "top"), (ellipse(0, 0.3, 0.2, 0.04), "top"),
                  (ellipse(0, -0.1, 0.5, rng.uniform(0.1, 0.16)), "top")]
    else:
        depth = rng.uniform(0.1, 0.2)
        items += _legs((-0.36, 0.36), -depth, 0.25, leg, "top", rng, 0.01)
        items += _legs((-0.46, 0.46), 0.0, 0.36, leg, "top", rng, 0.01)
        items += [(polygon((-0.5, -0.02), (0.5, -0.02), (0.42, -depth - 0.02), (-0.42, -depth - 0.02)), "top"),
                  (box(0, 0.0, 0.96, thin(0.05)), "top")]
    if cloth:
        items.append((polygon((-0.52, -0.05), (0.52, -0.05), (0.5, 0.16), (-0.5, 0.16)), "cloth"))
    return _parts(*items)


def dog(rng, thin):
    leg_len = rng.uniform(0.3, 0.42)
    head = (rng.uniform(0.3, 0.36), rng.uniform(-0.25, -0.14))
    items = [(bar(-0.3, -0.04, -0.46, rng.uniform(-0.3, -0.05), thin(0.045)), "fur")]
    items += _legs((-0.24, -0.16, 0.14, 0.22), 0.05, leg_len, thin(0.06), "fur", rng)
    items += [
        (ellipse(-0.04, 0.0, 0.3, rng.uniform(0.11, 0.14)), "fur"),
        (bar(0.18, 0.0, *head, thin(0.12)), "fur"),
        (ellipse(*head, 0.1, 0.09), "fur"),
        (ellipse(head[0] + 0.11, head[1] + 0.03, 0.08, 0.045), "fur"),
        (ellipse(head[0] + 0.18, head[1] + 0.01, 0.025, 0.02), "nose"),
        (ellipse(head[0] - 0.04, head[1] + 0.05, 0.035, 0.09, rng.uniform(10, 35)), "ear"),
    ]
    return _parts(*items)


def horse(rng, thin):
    leg_len = rng.uniform(0.42, 0.5)
    neck_top = (rng.uniform(0.3, 0.38), rng.uniform(-0.36, -0.28))
    items = [(bar(-0.3, -0.06, -0.4, rng.uniform(0.15, 0.3), thin(0.07)), "mane")]
    items += _legs((-0.24, -0.16, 0.16, 0.24), 0.05, leg_len, thin(0.045), "coat", rng, 0.05)
    items += [
        (ellipse(0, 0, 0.3, rng.uniform(0.12, 0.15)), "coat"),
        (polygon((0.16, -0.08), (0.3, 0.02), (neck_top[0] + 0.04, neck_top[1]), (neck_top[0] - 0.05, neck_top[1] - 0.02)), "coat"),
        (bar(0.18, -0.1, neck_top[0] - 0.05, neck_top[1] - 0.01, thin(0.04)), "mane"),
        (polygon((neck_top[0] - 0.05, neck_top[1] - 0.04), (neck_top[0] + 0.04, neck_top[1] - 0.05),
                 (neck_top[0] + 0.18, neck_top[1] + 0.12), (neck_top[0] + 0.12, neck_top[1] + 0.16)), "coat"),
    ]
    return _parts(*items)


def motorbike(rng, thin):
    r = rng.uniform(0.15, 0.19)
    items = []
    for x in (-0.33, 0.33):
        items += _wheel(x, 0.18, r, rng)
    items += [
        (bar(-0.1, 0.15, -0.42, 0.08, thin(0.04)), "metal"),  # exhaust
        (box(0, 0.1, rng.uniform(0.18, 0.26), 0.17), "metal"),  # engine
        (bar(0.24, -0.14, 0.33, 0.18, thin(0.035)), "metal"),  # fork
        (polygon((-0.42, -0.02), (-0.1, -0.05), (0.0, 0.06), (-0.3, 0.08)), "paint"),  # rear fender
        (polygon((-0.15, -0.06), (0.22, -0.1), (0.3, 0.04), (0.04, 0.08)), "paint"),  # tank, fairing
        (polygon((-0.34, -0.06), (-0.06, -0.08), (-0.06, -0.03), (-0.33, -0.01)), "seat"),
        (bar(0.2, -0.2, 0.3, -0.15, thin(0.03)), "metal"),  # handlebar
    ]
    return _parts(*items)


def person(rng, thin):
    head_r = rng.uniform(0.065, 0.08)
    torso_w = rng.uniform(0.19, 0.26)
    arm = thin(0.055)
    items = []
    if rng.random() < 0.3:  # upper body only, as in many close-ups
        head_r *= 1.8
        torso_w *= 1.8
        items += [(rounded_box(0, 0.2, torso_w, 0.6, 0.08), "shirt")]
        for side in (-1, 1):
            items.append((bar(side * torso_w * 0.45, -0.05, side * rng.uniform(0.22, 0.32), 0.5, thin(0.1)), "shirt"))
        items += [(box(0, -0.14, head_r * 0.7, 0.15), "skin"),
                  (ellipse(0, -0.3, head_r, head_r * 1.2), "skin"),
                  (ellipse(0, -0.38, head_r * 1.05, head_r * 0.8), "hair")]
        return _parts(*items)
    for side in (-1, 1):
        foot_x = side * rng.uniform(0.03, 0.14)
        items += [(bar(side * 0.05, 0.05, foot_x, 0.46, thin(0.07)), "trousers"),
                  (ellipse(foot_x + 0.02, 0.47, 0.045, thin(0.025)), "shoes")]
    for side in (-1, 1):
        hand = (side * rng.uniform(0.12, 0.3), rng.uniform(-0.25, 0.1))
        items += [(bar(side * torso_w * 0.45, -0.26, *hand, arm), "shirt"),
                  (ellipse(*hand, thin(0.03), thin(0.03)), "skin")]
    items += [
        (rounded_box(0, -0.1, torso_w, 0.38, 0.04), "shirt"),
        (box(0, -0.31, head_r * 0.8, 0.06), "skin"),
        (ellipse(0, -0.4, head_r, head_r * 1.2), "skin"),
        (ellipse(0, -0.44, head_r * 1.05, head_r * 0.8), "hair"),
    ]
    return _parts(*items)


def pottedplant(rng, thin):
    pot_w = rng.uniform(0.24, 0.34)
    items = [
        (polygon((-pot_w / 2, 0.2), (pot_w / 2, 0.2), (pot_w * 0.35, 0.5), (-pot_w * 0.35, 0.5)), "pot"),
        (box(0, 0.2, pot_w * 1.1, 0.05), "pot"),
    ]
    for _ in range(int(rng.integers(6, 12))):
        a = rng.uniform(-np.pi * 0.95, -np.pi * 0.05)  # upwards fan
        d = rng.uniform(0.12, 0.36)
        cx, cy = d * np.cos(a), 0.12 + d * np.sin(a) * 1.3
        items.append((ellipse(cx, cy, rng.uniform(0.08, 0.14), rng.uniform(0.03, 0.055),
                              np.rad2deg(a) + rng.uniform(-20, 20)), "leaf"))
    items.append((blob(rng, 0, 0.05, 0.12, 0.1, 7, 0.2), "leaf"))
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(2, 5))):
            items.append((ellipse(rng.uniform(-0.3, 0.3), rng.uniform(-0.4, 0.0), thin(0.035), thin(0.035)), "flower"))
    return _parts(*items)


def sheep(rng, thin):
    body_h = rng.uniform(0.15, 0.19)
    head = (rng.uniform(0.32, 0.38), rng.uniform(-0.12, -0.02))
    items = _legs((-0.22, -0.14, 0.12, 0.2), 0.1, 0.35, thin(0.035), "face", rng)
    t = np.linspace(0, 2 * np.pi, 11, endpoint=False) + rng.uniform(0, 0.5)
    for a in t:  # woolly bumps along the outline
        rr = rng.uniform(0.05, 0.08)
        items.append((ellipse(0.27 * np.cos(a), body_h * 0.9 * np.sin(a), rr, rr), "wool"))
    items += [
        (ellipse(0, 0, 0.3, body_h), "wool"),
        (ellipse(*head, 0.085, 0.06, -25), "face"),
        (ellipse(head[0] - 0.05, head[1] - 0.04, 0.04, 0.018, 20), "face"),
    ]
    return _parts(*items)


def sofa(rng, thin):
    seat_h = rng.uniform(0.22, 0.3)
    back_h = rng.uniform(0.22, 0.32)
    arm_w = rng.uniform(0.09, 0.14)
    items = _legs((-0.44, 0.44), seat_h / 2 + 0.08, seat_h / 2 + 0.14, thin(0.04), "legs", rng, 0.0)
    items += [
        (rounded_box(0, -0.02 - back_h / 2 + 0.05, 0.88, back_h, 0.05), "fabric"),
        (rounded_box(0, 0.1, 1.0 - arm_w, seat_h, 0.04), "fabric"),
        (rounded_box(-0.5 + arm_w / 2, 0.03, arm_w, seat_h + 0.16, 0.04), "fabric"),
        (rounded_box(0.5 - arm_w / 2, 0.03, arm_w, seat_h + 0.16, 0.04), "fabric"),
    ]
    n_cushions = int(rng.integers(2, 4))
    inner = 1.0 - 2 * arm_w
    for i in range(1, n_cushions):  # seams between the cushions
        x = -inner / 2 + i * inner / n_cushions
        items.append((bar(x, -back_h + 0.08, x, 0.1 + seat_h / 2 - 0.02, thin(0.015)), "seam"))
    if rng.random() < 0.4:
        items.append((rounded_box(rng.uniform(-0.25, 0.25), -0.08, 0.16, 0.14, 0.04), "pillow"))
    return _parts(*items)


def train(rng, thin):
    if rng.random() < 0.35:  # head-on
        items = [
            (rounded_box(0, 0, 0.62, 1.0, 0.1), "paint"),
            (box(0, -0.2, 0.48, rng.uniform(0.18, 0.26)), "glass"),
            (box(0, 0.3, 0.62, 0.06), "trim"),
            (ellipse(-0.2, 0.18, 0.04, 0.04), "light"),
            (ellipse(0.2, 0.18, 0.04, 0.04), "light"),
            (box(0, 0.47, 0.5, 0.06), "tyre"),
        ]
        return _parts(*items)
    h = rng.uniform(0.22, 0.3)
    nose = rng.uniform(0.05, 0.15)
    items = [(polygon((-0.5, -h / 2), (0.5 - nose, -h / 2), (0.5, 0.0), (0.5, h / 2), (-0.5, h / 2)), "paint")]
    n_win = int(rng.integers(5, 9))
    for i in range(n_win):
        items.append((box(-0.45 + (i + 0.5) * 0.8 / n_win, -h * 0.15, 0.8 / n_win * 0.65, h * 0.3), "glass"))
    items.append((box(-nose / 2, h * 0.2, 1.0 - nose, h * 0.1), "trim"))
    for i in range(int(rng.integers(4, 7))):
        x = -0.42 + i * 0.84 / 5
        items.append((ellipse(min(x, 0.4), h / 2 + 0.02, 0.04, 0.04), "tyre"))
    return _parts(*items)


def tvmonitor(rng, thin):
    aspect = rng.uniform(1.2, 1.8)
    h = 1.0 / aspect
    border = rng.uniform(0.035, 0.08)
    items = [(rounded_box(0, 0, 1.0, h, 0.02), "frame"),
             (box(0, 0, 1.0 - 2 * border, h - 2 * border), "screen")]
    if rng.random() < 0.7:
        items += [(box(0, h / 2 + 0.05, thin(0.08), 0.1), "frame"),
                  (box(0, h / 2 + 0.1, rng.uniform(0.3, 0.5), thin(0.04)), "frame")]
    return _parts(*items)


CLASS_BUILDERS: dict[str, Callable] = {
    "aeroplane": aeroplane, "bicycle": bicycle, "bird": bird, "boat": boat, "bottle": bottle,
    "bus": bus, "car": car, "cat": cat, "chair": chair, "cow": cow, "diningtable": diningtable,
    "dog": dog, "horse": horse, "motorbike": motorbike, "person": person,
    "pottedplant": pottedplant, "sheep": sheep, "sofa": sofa, "train": train, "tvmonitor": tvmonitor,
}


# ----------------------------------------------------------------------------- distractors

DISTRACTOR_KINDS = ("blob", "blob", "box", "ellipse", "bar", "frame", "triangle")


def distractor(rng, thin, kind: str):
    """Background clutter (label 0): shapes that belong to no class. One material slot, 'surface'."""
    if kind == "blob":
        return _parts((blob(rng, 0, 0, 0.5, rng.uniform(0.2, 0.5), int(rng.integers(5, 11))), "surface"))
    if kind == "box":
        return _parts((box(0, 0, 1.0, rng.uniform(0.15, 1.0)), "surface"))
    if kind == "ellipse":
        return _parts((ellipse(0, 0, 0.5, rng.uniform(0.12, 0.5)), "surface"))
    if kind == "bar":
        return _parts((box(0, 0, 1.0, thin(rng.uniform(0.02, 0.07))), "surface"))
    if kind == "frame":
        h = rng.uniform(0.4, 1.0)
        b = thin(rng.uniform(0.04, 0.1))
        return _parts((box(0, 0, 1.0, h), "surface"), (box(0, 0, 1.0 - 2 * b, h - 2 * b), None))
    if kind == "triangle":
        return _parts((rng.uniform(-0.5, 0.5, (3, 2)), "surface"))
    raise ValueError(f"unknown distractor kind {kind!r}")
