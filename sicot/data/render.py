"""Procedural product images: a category shape filled with a colour and a pattern, shaded like a
material, with a small brand glyph, posed on a cluttered background.

Classes that differ only in brand glyph or material look alike on purpose (fine-grained, as in
real product catalogues): the glyph is about a sixth of the product and materials change only
the shading. Everything is drawn at twice the output size and reduced, for clean edges.

`render_product(attrs, size, rng)` is a pure function of its arguments: the same attribute tuple,
size and random generator state give the same pixels.
"""
from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from sicot.data import vocabulary as vocab

# ---------------------------------------------------------------------------------------------
# Category shapes, drawn into a mask in unit coordinates (0..1 of the canvas). Each returns the
# point where the brand glyph sits.


def _box(m, *coords):
    return [c * m for c in coords]


def _mug(d, m):
    d.rounded_rectangle(_box(m, .25, .25, .65, .80), radius=.04 * m, fill=255)
    d.ellipse(_box(m, .56, .34, .82, .68), outline=255, width=int(.06 * m))
    return .45, .52


def _bottle(d, m):
    d.rounded_rectangle(_box(m, .35, .38, .65, .88), radius=.05 * m, fill=255)
    d.polygon(_box(m, .35, .39, .45, .22, .55, .22, .65, .39), fill=255)
    d.rectangle(_box(m, .44, .12, .56, .24), fill=255)
    d.rectangle(_box(m, .42, .07, .58, .13), fill=255)
    return .50, .62


def _sneaker(d, m):
    d.polygon(_box(m, .10, .70, .12, .45, .30, .42, .50, .50, .75, .55, .90, .64, .90, .75,
                   .10, .75), fill=255)
    d.rectangle(_box(m, .08, .74, .92, .82), fill=255)
    return .42, .60


def _handbag(d, m):
    d.polygon(_box(m, .20, .40, .80, .40, .88, .85, .12, .85), fill=255)
    d.arc(_box(m, .32, .18, .68, .62), 180, 360, fill=255, width=int(.05 * m))
    return .50, .63


def _lamp(d, m):
    d.polygon(_box(m, .35, .15, .65, .15, .78, .45, .22, .45), fill=255)
    d.rectangle(_box(m, .47, .45, .53, .80), fill=255)
    d.ellipse(_box(m, .30, .77, .70, .88), fill=255)
    return .50, .32


def _phone_case(d, m):
    d.rounded_rectangle(_box(m, .30, .10, .70, .90), radius=.08 * m, fill=255)
    d.rounded_rectangle(_box(m, .36, .16, .49, .30), radius=.03 * m, fill=0)
    return .50, .60


def _watch(d, m):
    d.rectangle(_box(m, .40, .04, .60, .96), fill=255)
    d.ellipse(_box(m, .27, .29, .73, .71), fill=255)
    return .50, .50


def _hat(d, m):
    d.pieslice(_box(m, .25, .22, .75, .88), 180, 360, fill=255)
    d.ellipse(_box(m, .08, .49, .92, .66), fill=255)
    return .50, .44


def _t_shirt(d, m):
    d.polygon(_box(m, .30, .15, .42, .15, .50, .22, .58, .15, .70, .15, .90, .32, .80, .42,
                   .72, .36, .72, .88, .28, .88, .28, .36, .20, .42, .10, .32), fill=255)
    return .50, .45


def _chair(d, m):
    d.rectangle(_box(m, .30, .10, .70, .50), fill=255)
    d.rectangle(_box(m, .25, .50, .75, .60), fill=255)
    d.rectangle(_box(m, .27, .60, .33, .92), fill=255)
    d.rectangle(_box(m, .67, .60, .73, .92), fill=255)
    return .50, .30


def _backpack(d, m):
    d.rounded_rectangle(_box(m, .25, .22, .75, .88), radius=.12 * m, fill=255)
    d.arc(_box(m, .38, .08, .62, .34), 180, 360, fill=255, width=int(.04 * m))
    d.rectangle(_box(m, .33, .62, .67, .64), fill=0)
    return .50, .44


def _umbrella(d, m):
    d.pieslice(_box(m, .08, .15, .92, .75), 180, 360, fill=255)
    for i in range(4):  # scalloped rim
        x0 = .08 + i * .21
        d.ellipse(_box(m, x0, .40, x0 + .21, .50), fill=0)
    d.rectangle(_box(m, .48, .44, .52, .84), fill=255)
    d.arc(_box(m, .38, .76, .52, .90), 0, 180, fill=255, width=int(.035 * m))
    return .50, .30


def _vase(d, m):
    d.polygon(_box(m, .42, .10, .58, .10, .56, .25, .72, .45, .70, .75, .60, .90, .40, .90,
                   .30, .75, .28, .45, .44, .25), fill=255)
    return .50, .60


def _teapot(d, m):
    d.ellipse(_box(m, .25, .35, .75, .85), fill=255)
    d.ellipse(_box(m, .40, .25, .60, .40), fill=255)
    d.polygon(_box(m, .70, .55, .90, .34, .95, .39, .74, .70), fill=255)
    d.ellipse(_box(m, .10, .42, .35, .72), outline=255, width=int(.05 * m))
    return .50, .60


def _headphones(d, m):
    d.arc(_box(m, .20, .10, .80, .80), 180, 360, fill=255, width=int(.07 * m))
    d.rounded_rectangle(_box(m, .13, .42, .32, .76), radius=.05 * m, fill=255)
    d.rounded_rectangle(_box(m, .68, .42, .87, .76), radius=.05 * m, fill=255)
    return .225, .59


def _sunglasses(d, m):
    d.ellipse(_box(m, .08, .38, .46, .66), fill=255)
    d.ellipse(_box(m, .54, .38, .92, .66), fill=255)
    d.line(_box(m, .42, .44, .58, .44), fill=255, width=int(.04 * m))
    d.line(_box(m, .09, .45, .02, .38), fill=255, width=int(.03 * m))
    d.line(_box(m, .91, .45, .98, .38), fill=255, width=int(.03 * m))
    return .27, .52


def _laptop(d, m):
    d.rectangle(_box(m, .20, .15, .80, .60), fill=255)
    d.polygon(_box(m, .12, .62, .88, .62, .95, .73, .05, .73), fill=255)
    return .50, .37


def _bowl(d, m):
    d.chord(_box(m, .10, .05, .90, .80), 0, 180, fill=255)
    d.rectangle(_box(m, .40, .76, .60, .85), fill=255)
    return .50, .57


def _notebook(d, m):
    d.rectangle(_box(m, .25, .12, .75, .88), fill=255)
    for i in range(7):  # spiral holes
        y = .17 + i * .1
        d.ellipse(_box(m, .27, y, .31, y + .04), fill=0)
    return .55, .50


def _cushion(d, m):
    d.rounded_rectangle(_box(m, .18, .18, .82, .82), radius=.2 * m, fill=255)
    for x, y in ((.15, .15), (.79, .15), (.15, .79), (.79, .79)):
        d.ellipse(_box(m, x, y, x + .06, y + .06), fill=255)
    return .50, .50


SHAPES = {
    "mug": _mug, "bottle": _bottle, "sneaker": _sneaker, "handbag": _handbag, "lamp": _lamp,
    "phone case": _phone_case, "watch": _watch, "hat": _hat, "t-shirt": _t_shirt,
    "chair": _chair, "backpack": _backpack, "umbrella": _umbrella, "vase": _vase,
    "teapot": _teapot, "headphones": _headphones, "sunglasses": _sunglasses,
    "laptop": _laptop, "bowl": _bowl, "notebook": _notebook, "cushion": _cushion,
}
assert set(SHAPES) == {c.name for c in vocab.CATEGORIES}

# ---------------------------------------------------------------------------------------------
# Patterns: weight of the secondary colour at each point (x, y in 0..1 of the canvas).


def _pattern_weight(name, x, y, rng):
    f = 6.0 * rng.uniform(0.85, 1.15)
    phase = rng.uniform(0, 1)
    if name == "plain":
        return np.zeros_like(x)
    if name == "striped":
        return (np.sin(2 * np.pi * (y * f + phase)) > 0).astype(np.float32)
    if name == "polka dot":
        gx, gy = (x * f + phase) % 1 - .5, (y * f + phase) % 1 - .5
        return (gx * gx + gy * gy < .07).astype(np.float32)
    if name == "checked":
        return ((np.floor(x * f * .8 + phase) + np.floor(y * f * .8 + phase)) % 2).astype(np.float32)
    if name == "gradient":
        return np.clip(y * 1.2 - .1, 0, 1).astype(np.float32)
    if name == "diagonal":
        return (np.sin(2 * np.pi * ((x + y) * f * .7 + phase)) > 0).astype(np.float32)
    if name == "zigzag":
        tri = np.abs((x * f * 1.5) % 1 - .5)
        return (np.sin(2 * np.pi * (y * f * .8 + tri * .8 + phase)) > 0).astype(np.float32)
    if name == "grid":
        return (((x * f + phase) % 1 < .18) | ((y * f + phase) % 1 < .18)).astype(np.float32)
    if name == "wavy":
        return (np.sin(2 * np.pi * (y * f + .12 * np.sin(2 * np.pi * x * 2.5) + phase)) > 0).astype(np.float32)
    if name == "camo":
        v = np.zeros_like(x)
        for _ in range(4):
            a, b, c = rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(0, 2 * np.pi)
            v = v + np.sin(a * x + b * y + c)
        return (v > .3).astype(np.float32)
    if name == "rings":
        r = np.sqrt((x - .5) ** 2 + (y - .5) ** 2)
        return (np.sin(2 * np.pi * (r * f * 1.4 + phase)) > .2).astype(np.float32)
    if name == "speckled":
        return (rng.random(x.shape, dtype=np.float32) < .12).astype(np.float32)
    raise ValueError(f"unknown pattern {name!r}")


# Materials: a brightness map (multiplied) and a specular map (added toward white).


def _gauss(x, y, cx, cy, sigma):
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))


def _material_shading(name, x, y, rng):
    ones = np.ones_like(x)
    hx, hy = .38 + rng.uniform(-.05, .05), .32 + rng.uniform(-.05, .05)
    if name == "matte":
        return .95 * ones - .04 * rng.random(x.shape, dtype=np.float32), 0 * ones, 0.0
    if name == "glossy":
        return 1.05 - .25 * y, .75 * _gauss(x, y, hx, hy, .07), 0.0
    if name == "metal":
        rows = rng.normal(0, .07, size=(x.shape[0], 1))
        return 1.15 - .45 * y + rows, .35 * np.exp(-((x - hx) ** 2) / .004), .55
    if name == "wood":
        return .82 + .16 * np.sin(2 * np.pi * (x * 9 + .6 * np.sin(2 * np.pi * y * 1.5))), 0 * ones, .1
    if name == "leather":
        blot = np.sin(x * 23 + rng.uniform(0, 6)) * np.sin(y * 19 + rng.uniform(0, 6))
        return .88 + .07 * blot - .05 * rng.random(x.shape, dtype=np.float32), .12 * _gauss(x, y, hx, hy, .15), 0.0
    if name == "fabric":
        n = x.shape[0]
        cell = np.arange(n) // max(1, n // 48)
        weave = ((cell[None, :] + cell[:, None]) % 2).astype(np.float32)
        return .86 + .12 * weave, 0 * ones, 0.0
    if name == "ceramic":
        r2 = (x - .5) ** 2 + (y - .5) ** 2
        return 1.08 - 1.2 * r2, .35 * _gauss(x, y, hx, hy, .05), 0.0
    if name == "plastic":
        return 1.0 * ones, .3 * _gauss(x, y, hx, hy, .16), 0.0
    raise ValueError(f"unknown material {name!r}")


# Brand glyphs: 8 outer shapes x 5 inner marks = 40 brands.
_GLYPH_OUTER = ("circle", "square", "triangle", "diamond", "star", "hexagon", "cross", "ring")
_GLYPH_INNER = ("none", "dot", "bar", "slash", "vbar")
assert len(_GLYPH_OUTER) * len(_GLYPH_INNER) == len(vocab.BRANDS)


def _regular_polygon(cx, cy, r, n, rot=-math.pi / 2, inner=None):
    pts = []
    for k in range(n * (2 if inner else 1)):
        rr = r if (inner is None or k % 2 == 0) else r * inner
        a = rot + 2 * math.pi * k / (n * (2 if inner else 1))
        pts += [cx + rr * math.cos(a), cy + rr * math.sin(a)]
    return pts


def _draw_glyph(d, brand_index, cx, cy, r, ink, paper):
    outer = _GLYPH_OUTER[brand_index % len(_GLYPH_OUTER)]
    inner = _GLYPH_INNER[brand_index // len(_GLYPH_OUTER)]
    box = [cx - r, cy - r, cx + r, cy + r]
    if outer == "circle":
        d.ellipse(box, fill=ink)
    elif outer == "square":
        d.rectangle([cx - .85 * r, cy - .85 * r, cx + .85 * r, cy + .85 * r], fill=ink)
    elif outer == "triangle":
        d.polygon(_regular_polygon(cx, cy + .2 * r, 1.15 * r, 3), fill=ink)
    elif outer == "diamond":
        d.polygon(_regular_polygon(cx, cy, r, 4), fill=ink)
    elif outer == "star":
        d.polygon(_regular_polygon(cx, cy, 1.15 * r, 5, inner=.45), fill=ink)
    elif outer == "hexagon":
        d.polygon(_regular_polygon(cx, cy, r, 6, rot=0), fill=ink)
    elif outer == "cross":
        d.rectangle([cx - r, cy - .33 * r, cx + r, cy + .33 * r], fill=ink)
        d.rectangle([cx - .33 * r, cy - r, cx + .33 * r, cy + r], fill=ink)
    elif outer == "ring":
        d.ellipse(box, outline=ink, width=max(1, int(.35 * r)))
    w = max(1, int(.22 * r))
    if inner == "dot":
        d.ellipse([cx - .3 * r, cy - .3 * r, cx + .3 * r, cy + .3 * r], fill=paper)
    elif inner == "bar":
        d.line([cx - .6 * r, cy, cx + .6 * r, cy], fill=paper, width=w)
    elif inner == "slash":
        d.line([cx - .5 * r, cy + .5 * r, cx + .5 * r, cy - .5 * r], fill=paper, width=w)
    elif inner == "vbar":
        d.line([cx, cy - .6 * r, cx, cy + .6 * r], fill=paper, width=w)


# ---------------------------------------------------------------------------------------------


def _random_colour(rng, lo=30, hi=230):
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def _background(m, rng):
    base = np.array(_random_colour(rng, 60, 235), np.float32)
    tint = np.array(_random_colour(rng, 60, 235), np.float32)
    t = np.linspace(0, 1, m, dtype=np.float32)[:, None, None]
    column = (base * (1 - .5 * t) + tint * .5 * t).astype(np.uint8)  # vertical gradient
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(column, (m, m, 3))), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):  # clutter
        kind = rng.integers(0, 3)
        x0, y0 = rng.uniform(-.2, 1.0, size=2) * m
        w, h = rng.uniform(.08, .45, size=2) * m
        colour = _random_colour(rng)
        if kind == 0:
            d.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            d.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            d.line([x0, y0, x0 + w, y0 + h], fill=colour, width=int(rng.integers(1, max(2, m // 20))))
    return img


def _affine_inverse(m, angle_deg, scale, tx, ty):
    """Inverse map (output pixel -> input pixel) of: scale and rotate about the centre, shift."""
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    c = m / 2
    ox, oy = c + tx, c + ty
    return (cos, sin, c - cos * ox - sin * oy, -sin, cos, c + sin * ox - cos * oy)


@functools.lru_cache(maxsize=8)
def _unit_grid(m):
    grid = (np.arange(m, dtype=np.float32) + .5) / m
    x, y = np.meshgrid(grid, grid)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def render_product(attrs: tuple[int, ...], size: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image of `size` x `size` of the product with attribute indices `attrs`
    (brand, colour, material, pattern, category, as in `vocabulary.ATTRIBUTES`)."""
    brand, colour, material, pattern, category = attrs
    ss = 2 if size <= 256 else 1
    m = size * ss
    x, y = _unit_grid(size)  # colour work at the output size; edges at m

    # The product in its own frame: fill colour, pattern, material, glyph.
    rgb = np.array(vocab.COLOURS[colour].rgb, np.float32)
    rgb = np.clip(rgb + rng.normal(0, 10, size=3), 0, 255)  # colour jitter
    lum = rgb @ np.array([.299, .587, .114], np.float32)
    contrast = (250, 250, 245) if lum < 140 else (20, 20, 25)
    second = .4 * rgb + .6 * np.array(contrast, np.float32)
    bright, spec, desaturate = _material_shading(vocab.MATERIALS[material].name, x, y, rng)
    if desaturate:
        rgb, second = (c * (1 - desaturate) + c.mean() * desaturate for c in (rgb, second))
    weight = _pattern_weight(vocab.PATTERNS[pattern].name, x, y, rng).astype(np.float32)[..., None]
    fill = rgb + (second - rgb) * weight
    fill = fill * np.asarray(bright, np.float32)[..., None]
    spec = np.clip(np.asarray(spec, np.float32), 0, 1)[..., None]
    fill = fill + (255 - fill) * spec
    product = Image.fromarray(np.clip(fill, 0, 255).astype(np.uint8), "RGB")
    if ss != 1:
        product = product.resize((m, m), Image.BILINEAR)

    mask = Image.new("L", (m, m), 0)
    anchor = SHAPES[vocab.CATEGORIES[category].name](ImageDraw.Draw(mask), m)
    ink, paper = ((15, 15, 15), (245, 245, 245)) if lum > 110 else ((245, 245, 245), (15, 15, 15))
    _draw_glyph(ImageDraw.Draw(product), brand, anchor[0] * m, anchor[1] * m, .085 * m, ink, paper)

    # Pose: rotate, scale and shift product and mask together.
    inv = _affine_inverse(m, rng.uniform(-25, 25), rng.uniform(.68, 1.0),
                          *(rng.uniform(-.12, .12, size=2) * m))
    product.putalpha(mask)  # one transform moves colour and mask together
    product = product.transform((m, m), Image.AFFINE, inv, resample=Image.BILINEAR)
    mask = product.getchannel("A")

    bg = _background(m, rng)
    shift = m // 32 + 1
    bg = Image.composite(Image.blend(bg, Image.new("RGB", (m, m)), .35), bg, ImageChops.offset(mask, shift, shift))
    img = Image.composite(product, bg, mask)

    if rng.random() < .15:  # occlusion by another object
        d = ImageDraw.Draw(img)
        w, h = rng.uniform(.2, .45, size=2) * m
        x0, y0 = rng.uniform(.1, .9 - w / m) * m, rng.uniform(.1, .9 - h / m) * m
        shape = d.ellipse if rng.random() < .5 else d.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=_random_colour(rng))

    if ss != 1:
        img = img.resize((size, size), Image.BOX)
    out = np.asarray(img, np.float32)
    # Photometric jitter and sensor noise, at the output resolution.
    gain = (rng.uniform(.85, 1.15) * rng.uniform(.93, 1.07, size=3)).astype(np.float32)
    out = (out * gain - 128) * np.float32(rng.uniform(.85, 1.15)) + 128
    out = out + 4 * rng.standard_normal(out.shape, dtype=np.float32)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """JPEG or PNG bytes, without timestamps or other varying metadata."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    elif fmt == "png":
        img.save(buf, format="PNG", optimize=False)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()
