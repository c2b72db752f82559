"""One synthetic photograph and its ground truth: a textured two-region background, clutter shapes
of no class (label 0), one to three class objects that may overlap (later ones occlude earlier
ones), shadows, shading, then blur and sensor noise.

Every shape is rasterised the same way (polygons drawn at SUPERSAMPLE x the image size, averaged
down to a soft coverage), so object edges and clutter edges look alike; a pixel belongs to the
topmost layer whose coverage is at least 0.5, which is also what the image shows there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retab.synth import shapes
from retab.synth.catalog import ANY_SURFACE, CLASS_STYLES, SCENES, ClassStyle, desaturated
from retab.synth.textures import Derived, Material, material_colour, sample_material, value_noise
from retab.voc import CATEGORIES

SUPERSAMPLE = 3  # polygons are drawn at 3x and averaged down: soft, anti-aliased edges
IMAGE_SIDE = (128, 200)  # default range of width and height (each drawn independently)
MIN_BAR_PX = 2.0  # thinnest limb, in pixels
MIN_VISIBLE_PX = 120  # an object keeps at least this many visible pixels ...
MIN_VISIBLE_FRACTION = 0.3  # ... and this fraction of its pixels in the image unoccluded ...
MIN_INTERIOR_PX = 40  # ... and this many pixels outside the outline band
# VOC's ignore band is about 5 px wide on its ~500 x 375 pictures; the mini-VOC's band keeps that
# width relative to the picture: a BAND_WINDOW x BAND_WINDOW window at VOC's size, 3 x 3 (1 px on
# each side of an outline) at the default 128..200 px. (A 5 px band on these small pictures left
# the thin classes, bicycle frames, chair legs, almost no labelled pixel, and taught the boundary
# net 8-16 px wide edges.)
BAND_WINDOW = 5
VOC_SIDE = 430.0  # geometric mean side of a VOC 2012 picture
PLACEMENT_TRIES = 8
OBJECT_COUNT_P = (0.45, 0.35, 0.2)  # probability of 1, 2, 3 objects
COMPANION_P = 0.6  # an extra object is a usual companion of the first one (else any class)
# The scene is one the first class is usually seen in (else any). Kept at an even chance: at 0.75
# a classifier trained from scratch on a few hundred images learnt "sky" for aeroplane and "water"
# for boat and put their CAMs there (aeroplane CAM IoU 5 with classification AP 0.79).
SCENE_FROM_CLASS_P = 0.5
FRONT_OCCLUDER_P = 0.15  # a clutter shape in front of the objects (a pole, a branch)
CLUTTER_KINDS = shapes.DISTRACTOR_KINDS + ("part", "part")


@dataclass
class Pose:
    """Object frame -> image: flip, stretch by aspect, rotate, scale (pixels per object unit), move."""

    cx: float
    cy: float
    scale: float
    angle: float  # radians
    aspect: float = 1.0
    flip: float = 1.0  # -1 mirrors left-right

    def __post_init__(self):  # plain floats keep float32 pixel arrays float32
        for name in ("cx", "cy", "scale", "angle", "aspect", "flip"):
            setattr(self, name, float(getattr(self, name)))

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        sa = np.sqrt(self.aspect)
        x = pts[:, 0] * self.flip * sa
        y = pts[:, 1] / sa
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.stack([self.cx + self.scale * (c * x - s * y), self.cy + self.scale * (s * x + c * y)], 1)

    def to_object(self, xs: np.ndarray, ys: np.ndarray):
        dx = (xs - self.cx) / self.scale
        dy = (ys - self.cy) / self.scale
        c, s = np.cos(self.angle), np.sin(self.angle)
        sa = np.sqrt(self.aspect)
        return (c * dx + s * dy) / (self.flip * sa), (c * dy - s * dx) * sa


@dataclass
class Layer:
    """One rasterised shape: soft coverage per material slot inside its box (x0, y0, x1, y1)."""

    label: int  # VOC label 1..20, or 0 for clutter
    pose: Pose
    box: tuple
    slot_alpha: dict
    materials: dict = field(default_factory=dict)
    instance: int = 0  # 1.. for kept objects, 0 for clutter

    @cached_property
    def coverage(self) -> np.ndarray:
        return sum(self.slot_alpha.values())

    @cached_property
    def mask(self) -> np.ndarray:
        return self.coverage >= 0.5


@dataclass
class Sample:
    image: np.ndarray  # uint8 (H, W, 3)
    instances: np.ndarray  # uint8 (H, W): 0 background, k = k-th object
    labels: list  # VOC label of instance k + 1
    scene: str

    def class_mask(self) -> np.ndarray:
        """The band-free segmentation mask (labels 0..20)."""
        return np.array([0] + list(self.labels), np.uint8)[self.instances]

    def boxes(self) -> list:
        """Per instance: (xmin, ymin, xmax, ymax) of its visible pixels, 1-based inclusive (VOC)."""
        out = []
        for k in range(1, len(self.labels) + 1):
            ys, xs = np.nonzero(self.instances == k)
            out.append((int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1))
        return out


def band_window(height: int, width: int) -> int:
    """The odd window of the ignore band for a picture of this size: BAND_WINDOW at VOC's size,
    scaled with the picture's side, at least 3."""
    half = round((BAND_WINDOW // 2) * np.sqrt(height * width) / VOC_SIDE)
    return 2 * max(1, int(half)) + 1


def outline_band(instances: np.ndarray, window: int | None = None) -> np.ndarray:
    """True where a `window` x `window` neighbourhood holds more than one instance value (default:
    band_window of the map's size)."""
    window = window or band_window(*instances.shape)
    return _window_reduce(instances, window, np.maximum) != _window_reduce(instances, window, np.minimum)


def _window_reduce(values: np.ndarray, window: int, op) -> np.ndarray:
    """Separable max or min over a window x window neighbourhood; outside the image does not count."""
    r = window // 2
    height, width = values.shape
    rows = np.pad(values, ((0, 0), (r, r)), mode="edge")
    out = rows[:, 0:width].copy()
    for k in range(1, window):
        op(out, rows[:, k:k + width], out=out)
    cols = np.pad(out, ((r, r), (0, 0)), mode="edge")
    out = cols[0:height].copy()
    for k in range(1, window):
        op(out, cols[k:k + height], out=out)
    return out


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The one random stream of image `index`: independent of every other image."""
    return np.random.default_rng([seed, 1, index])


def render_sample(seed: int, index: int, first_class: int, side: tuple[int, int] = IMAGE_SIDE) -> Sample:
    """Image `index` of the dataset made with `seed`; `first_class` (1..20) is always in it; width
    and height are drawn in `side` (objects and clutter are sized relative to the picture)."""
    rng = image_rng(seed, index)
    width, height = (int(v) for v in rng.integers(side[0], side[1] + 1, 2))
    classes = _choose_classes(rng, first_class)
    style = CLASS_STYLES[CATEGORIES[first_class - 1]]
    scene = str(rng.choice(style.scenes)) if rng.random() < SCENE_FROM_CLASS_P else str(rng.choice(list(SCENES)))
    light = _light(rng)

    image = _background(rng, scene, width, height)
    n_clutter = int(rng.integers(SCENES[scene][3][0], SCENES[scene][3][1] + 1))
    clutter = [_clutter_layer(rng, scene, width, height) for _ in range(n_clutter)]
    objects = _place_objects(rng, classes, width, height)
    front = _front_occluder(rng, scene, objects, width, height)

    for layer in clutter:
        if layer is not None:
            _paint(image, layer, light)
    for layer in objects:
        if scene != "sky" and rng.random() < 0.6:
            _cast_shadow(image, layer, light, rng)
    if rng.random() < 0.3:  # shallow depth of field: background out of focus
        image = _blur(image, rng.uniform(0.6, 1.8))
    for layer in objects + front:
        _paint(image, layer, light)

    return Sample(
        image=_camera(rng, image),
        instances=_instance_map(objects + front, width, height),
        labels=[layer.label for layer in objects],
        scene=scene,
    )


# ----------------------------------------------------------------------------- composition

def _choose_classes(rng, first_class: int) -> list[int]:
    count = int(rng.choice(len(OBJECT_COUNT_P), p=OBJECT_COUNT_P)) + 1
    companions = CLASS_STYLES[CATEGORIES[first_class - 1]].companions
    classes = [first_class]
    for _ in range(count - 1):
        if companions and rng.random() < COMPANION_P:
            classes.append(CATEGORIES.index(str(rng.choice(companions))) + 1)
        else:
            classes.append(int(rng.integers(1, len(CATEGORIES) + 1)))
    return classes


def _place_objects(rng, classes, width, height) -> list[Layer]:
    """Add objects back to front; a placement that would hide too much of any object is redrawn,
    and an object that finds no place after PLACEMENT_TRIES is left out."""
    objects: list[Layer] = []
    for k, label in enumerate(classes):
        for _ in range(PLACEMENT_TRIES):
            layer = _object_layer(rng, label, width, height, first=k == 0)
            if layer is not None:
                layer.instance = len(objects) + 1
                if _all_visible(objects + [layer], width, height):
                    objects.append(layer)
                    break
        else:
            if k == 0:  # the first class must be in the image: large and centred
                layer = _object_layer(rng, label, width, height, first=True, fallback=True)
                layer.instance = 1
                objects.append(layer)
    return objects


def _front_occluder(rng, scene, objects, width, height) -> list[Layer]:
    if rng.random() >= FRONT_OCCLUDER_P:
        return []
    for _ in range(3):
        layer = _clutter_layer(rng, scene, width, height, kind=str(rng.choice(["bar", "blob"])))
        if layer is not None and _all_visible(objects + [layer], width, height):
            return [layer]
    return []


def _instance_map(layers, width, height) -> np.ndarray:
    inst = np.zeros((height, width), np.uint8)
    for layer in layers:
        x0, y0, x1, y1 = layer.box
        inst[y0:y1, x0:x1][layer.mask] = layer.instance
    return inst


def _all_visible(layers, width, height) -> bool:
    """Every object keeps enough visible pixels, and enough of them away from outlines."""
    inst = _instance_map(layers, width, height)
    n = len(layers) + 1
    visible = np.bincount(inst.ravel(), minlength=n)
    interior = np.bincount(inst[~outline_band(inst)], minlength=n)
    for layer in layers:
        if layer.instance == 0:
            continue
        own = int(layer.mask.sum())
        k = layer.instance
        if visible[k] < max(MIN_VISIBLE_PX, MIN_VISIBLE_FRACTION * own) or interior[k] < MIN_INTERIOR_PX:
            return False
    return True


# ----------------------------------------------------------------------------- layers

def _object_layer(rng, label, width, height, first, fallback=False) -> Layer | None:
    style = CLASS_STYLES[CATEGORIES[label - 1]]
    short = min(width, height)
    if fallback:
        size, centre = 1.0 * short, (width / 2, height / 2)
    elif first:
        size = rng.uniform(0.5, 1.1) * short
        centre = (rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height)
    else:
        size = np.exp(rng.uniform(np.log(0.25), np.log(0.8))) * short
        centre = (rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height)
    pose = Pose(centre[0], centre[1], size, np.deg2rad(rng.uniform(-style.rotation, style.rotation)),
                np.exp(rng.uniform(*np.log(style.aspect))), -1.0 if style.flip and rng.random() < 0.5 else 1.0)
    parts = _build(shapes.CLASS_BUILDERS[CATEGORIES[label - 1]], rng, size)
    layer = _rasterise(parts, pose, label, width, height)
    if layer is not None:
        layer.materials = _object_materials(rng, style)
    return layer


def _clutter_layer(rng, scene, width, height, kind=None) -> Layer | None:
    kind = kind or str(rng.choice(CLUTTER_KINDS))
    longest = max(width, height)
    size_range = {"bar": (0.12, 1.5), "part": (0.1, 0.45)}.get(kind, (0.12, 0.9))
    size = np.exp(rng.uniform(*np.log(size_range))) * longest
    upright = kind in ("box", "frame") and rng.random() < 0.7  # windows, doors, pictures
    angle = rng.uniform(-8, 8) if upright else rng.uniform(-90, 90)
    pose = Pose(rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height, size, np.deg2rad(angle),
                np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    if kind == "part":  # a lone piece of some class (a wheel, a leaf, a head) that is no object
        materials = CLASS_STYLES[str(rng.choice(CATEGORIES))].materials
        slot = str(rng.choice(list(materials)))
        builder = shapes.CLASS_BUILDERS[CATEGORIES[int(rng.integers(len(CATEGORIES)))]]
        parts = _build(lambda r, thin: _one_part(r, builder(r, thin)), rng, size)
        spec = _class_spec(rng, materials, slot)
    else:
        parts = _build(lambda r, thin: shapes.distractor(r, thin, kind), rng, size)
        spec = _clutter_spec(rng, scene)
    layer = _rasterise(parts, pose, 0, width, height)
    if layer is not None:
        layer.materials = {"surface": sample_material(spec, rng)}
    return layer


def _one_part(rng, parts) -> list[shapes.Part]:
    solid = [p for p in parts if p.slot is not None]
    return [shapes.Part(solid[int(rng.integers(len(solid)))].points, "surface")]


def _clutter_spec(rng, scene):
    """Clutter looks like anything: a random surface, a scene surface, or a class's material."""
    r = rng.random()
    if r < 0.35:  # borrowed from a class: colour and texture alone must not decide the class
        materials = CLASS_STYLES[str(rng.choice(CATEGORIES))].materials
        return _class_spec(rng, materials, str(rng.choice(list(materials))))
    if r < 0.6:
        _, upper, lower, _ = SCENES[scene]
        return _pick_spec(rng, tuple(upper) + tuple(lower))
    return ANY_SURFACE


def _class_spec(rng, materials: dict, slot: str):
    """The MaterialSpec of a class slot (a Derived slot stands for its source's spec), as clutter
    borrows it: desaturated, so that a signature colour (catalog.SIGNATURES) is only on objects."""
    spec = _pick_spec(rng, materials[slot])
    while isinstance(spec, Derived):
        spec = _pick_spec(rng, materials[spec.source])
    return desaturated(spec)


def _pick_spec(rng, spec):
    return spec[int(rng.integers(len(spec)))] if isinstance(spec, tuple) else spec


def _object_materials(rng, style: ClassStyle) -> dict[str, Material]:
    mats = {}
    chosen = {slot: _pick_spec(rng, spec) for slot, spec in style.materials.items()}
    for slot, spec in chosen.items():
        if not isinstance(spec, Derived):
            mats[slot] = sample_material(spec, rng)
    for slot, spec in chosen.items():
        if isinstance(spec, Derived):
            mats[slot] = mats[spec.source].scaled(spec.gain)
    return mats


def _build(builder, rng, size_px) -> list[shapes.Part]:
    """Run a builder, then centre its parts and scale them so that the longest extent is 1."""
    parts = builder(rng, lambda w: max(w, MIN_BAR_PX / size_px))
    solid = np.concatenate([p.points for p in parts if p.slot is not None])
    lo, hi = solid.min(0), solid.max(0)
    centre, extent = (lo + hi) / 2, float((hi - lo).max())
    return [shapes.Part((p.points - centre) / extent, p.slot) for p in parts]


def _rasterise(parts, pose: Pose, label: int, width: int, height: int) -> Layer | None:
    polys = [(pose.to_image(p.points), p.slot) for p in parts]
    solid = np.concatenate([pts for pts, slot in polys if slot is not None])
    x0, y0 = np.maximum(np.floor(solid.min(0)).astype(int), 0)
    x1 = min(int(np.ceil(solid[:, 0].max())) + 1, width)
    y1 = min(int(np.ceil(solid[:, 1].max())) + 1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    slots = list(dict.fromkeys(slot for _, slot in polys if slot is not None))
    ss = SUPERSAMPLE
    canvas = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, slot in polys:
        # pixel (i, j) of the canvas samples the image point ((i + 0.5) / ss, (j + 0.5) / ss)
        draw.polygon(((pts - (x0, y0)) * ss - 0.5).ravel().tolist(), fill=0 if slot is None else slots.index(slot) + 1)
    slot_alpha = {}
    for i, slot in enumerate(slots):
        lut = [0] * 256
        lut[i + 1] = 255
        alpha = np.asarray(canvas.point(lut).reduce(ss), np.float32) / 255  # box average: soft edges
        if alpha.any():
            slot_alpha[slot] = alpha
    if not slot_alpha:
        return None
    return Layer(label, pose, (int(x0), int(y0), x1, y1), slot_alpha)


# ----------------------------------------------------------------------------- painting

@dataclass
class Light:
    direction: tuple  # unit vector towards the light, image frame
    strength: float  # brightness change across an object
    rim: float  # darkening at object silhouettes


def _light(rng) -> Light:
    a = rng.uniform(-np.pi * 0.9, -np.pi * 0.1)  # mostly from above
    return Light((float(np.cos(a)), float(np.sin(a))), rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.35))


def _background(rng, scene: str, width: int, height: int) -> np.ndarray:
    """Two surfaces (sky / wall above, ground / floor below) split by a tilted, wavy horizon."""
    horizon_range, uppers, lowers, _ = SCENES[scene]
    side = max(width, height)
    upper_mat = sample_material(_pick_spec(rng, tuple(uppers)), rng)
    lower_mat = sample_material(_pick_spec(rng, tuple(lowers)), rng)
    grid = rng.random((16, 16), dtype=np.float32)
    xs = np.arange(width, dtype=np.float32) + 0.5
    horizon = (rng.uniform(*horizon_range) * height + rng.uniform(-0.3, 0.3) * (xs - width / 2)
               + rng.uniform(0, 0.1) * height * (value_noise(grid, xs / side * 4, np.zeros_like(xs)) - 0.5))
    softness = rng.uniform(1.0, 4.0)
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    below = np.clip((ys - horizon) / softness + 0.5, 0, 1)
    # each surface is painted only on the rows it can reach
    top_end = int(np.clip(np.ceil(horizon.max() + softness), 0, height))
    low_start = int(np.clip(np.floor(horizon.min() - softness), 0, height))
    image = np.zeros((height, width, 3), np.float32)
    if top_end > 0:
        u, v = np.meshgrid(xs / side, ys[:top_end, 0] / side)
        image[:top_end] = material_colour(upper_mat, u, v) * (1 - below[:top_end, :, None])
    if low_start < height:
        u, v = np.meshgrid(xs / side, ys[low_start:, 0] / side)
        image[low_start:] += material_colour(lower_mat, u, v) * below[low_start:, :, None]
    # slow illumination changes across the picture, computed coarse and resized
    cu, cv = np.meshgrid(np.linspace(0, 2 * width / side, 12, dtype=np.float32),
                         np.linspace(0, 2 * height / side, 12, dtype=np.float32))
    coarse = Image.fromarray(value_noise(grid, cu + 3, cv) - 0.5, mode="F").resize((width, height), Image.BILINEAR)
    shade = (1 + rng.uniform(-0.3, 0.3) * (ys / side - 0.5)) + rng.uniform(0.1, 0.3) * np.asarray(coarse)
    return image * shade[..., None]


def _paint(image: np.ndarray, layer: Layer, light: Light) -> None:
    x0, y0, x1, y1 = layer.box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    u, v = layer.pose.to_object(xs, ys)
    dx = (xs - layer.pose.cx) / layer.pose.scale
    dy = (ys - layer.pose.cy) / layer.pose.scale
    lx, ly = light.direction
    coverage = layer.coverage
    shade = (1 + light.strength * (dx * lx + dy * ly)) * _rim(coverage, layer.pose.scale, light.rim)
    out = image[y0:y1, x0:x1] * (1 - coverage[..., None])
    for slot, alpha in layer.slot_alpha.items():
        mat = layer.materials[slot]
        colour = material_colour(mat, u, v) * shade[..., None]
        if mat.gloss > 0:  # specular highlight on the side facing the light
            spot = np.exp(-((dx - 0.2 * lx) ** 2 + (dy - 0.2 * ly) ** 2) / (2 * 0.12 ** 2))
            colour = colour + (mat.gloss * spot)[..., None]
        out += alpha[..., None] * colour
    image[y0:y1, x0:x1] = out


def _blur_map(values: np.ndarray, radius: float) -> np.ndarray:
    img = Image.fromarray((np.clip(values, 0, 1) * 255).astype(np.uint8), mode="L")
    return np.asarray(img.filter(ImageFilter.GaussianBlur(float(radius))), np.float32) / 255


def _rim(coverage: np.ndarray, scale: float, strength: float) -> np.ndarray:
    """Darker near the silhouette, as a rounded body turns away from the light."""
    pad = int(np.ceil(max(1.0, 0.05 * scale) * 2))
    soft = _blur_map(np.pad(coverage, pad), max(1.0, 0.05 * scale))[pad:-pad, pad:-pad]
    return 1 - strength * np.clip(2 * (1 - soft), 0, 1)


def _cast_shadow(image: np.ndarray, layer: Layer, light: Light, rng) -> None:
    """A soft ground shadow: the silhouette squashed flat at the object's foot, away from the light."""
    x0, y0, x1, y1 = layer.box
    w, h = x1 - x0, y1 - y0
    flat_h = max(2, int(round(h * rng.uniform(0.15, 0.35))))
    flat = np.asarray(Image.fromarray((layer.coverage * 255).astype(np.uint8), mode="L").resize((w, flat_h), Image.BILINEAR),
                      np.float32) / 255
    radius = max(1.5, rng.uniform(0.04, 0.08) * layer.pose.scale)
    pad = int(np.ceil(2 * radius))
    shadow = _blur_map(np.pad(flat, pad), radius) * rng.uniform(0.2, 0.45)
    x = x0 - pad + int(round(-light.direction[0] * rng.uniform(0.1, 0.3) * w))
    y = y1 - pad - int(round(flat_h * rng.uniform(0.4, 0.8)))
    height, width = image.shape[:2]
    cx0, cy0 = max(x, 0), max(y, 0)
    cx1, cy1 = min(x + shadow.shape[1], width), min(y + shadow.shape[0], height)
    if cx1 > cx0 and cy1 > cy0:
        image[cy0:cy1, cx0:cx1] *= (1 - shadow[cy0 - y:cy1 - y, cx0 - x:cx1 - x])[..., None]


def _blur(image: np.ndarray, radius: float) -> np.ndarray:
    img = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(float(radius))), np.float32) / 255


def _camera(rng, image: np.ndarray) -> np.ndarray:
    """Exposure, colour cast, gamma, vignetting, lens blur and sensor noise; returns uint8."""
    height, width = image.shape[:2]
    image = image * rng.uniform(0.85, 1.15) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xs / width - 0.5) ** 2 + (ys / height - 0.5) ** 2) * 2
    image = np.clip(image * (1 - rng.uniform(0.0, 0.3) * r2)[..., None], 0, 1) ** rng.uniform(0.85, 1.15)
    image = _blur(image, rng.uniform(0.3, 0.8))
    noise = rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(rng.uniform(1.5, 4.0) / 255)
    noise = noise + rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(1.0 / 255)
    return (np.clip(image + noise, 0, 1) * 255 + 0.5).astype(np.uint8)
