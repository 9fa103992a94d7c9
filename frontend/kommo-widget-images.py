#!/usr/bin/env python3
"""Regenerates the PNG logos of the Kommo widget (frontend/kommo-widget/images/).

Kommo checks each logo's exact pixel size and a 300 KB ceiling per image, so the
sizes below are the ones from Kommo's table, not a design choice. The art is a
placeholder brand: a #0B6E4F field, a light rounded mark with a "p", and a
"pipepay" wordmark drawn from circles and strokes (no font needed). Only the
standard library is used, so any Python 3 can rebuild the images, and the output
is byte-for-byte reproducible.

Usage: python3 frontend/kommo-widget-images.py
"""

import math
import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent / "kommo-widget" / "images"

BRAND = (0x0B, 0x6E, 0x4F)
MARK = (0xD7, 0xF2, 0xE4)
WORD = (0xFF, 0xFF, 0xFF)

# Kommo's image table: name -> (width, height). logo_dp.png is the Digital Pipeline
# action's picture, needed with the digital_pipeline location.
SIZES = {
    "logo_main.png": (400, 272),
    "logo_medium.png": (240, 84),
    "logo_min.png": (84, 84),
    "logo.png": (130, 100),
    "logo_small.png": (108, 108),
    "logo_dp.png": (174, 109),
}
LIMIT_BYTES = 300 * 1000

# Glyph geometry in units of the x-height; baseline at y = 0, y grows upwards.
HALF = 0.1  # half the stroke width
GAP = 0.24  # space between glyphs
INK_TOP = 1.42  # top of the dot on the "i"
INK_BOTTOM = -0.55  # bottom of the descenders


def capsule(ax, ay, bx, by):
    return ("capsule", ax, ay, bx, by)


def ring(cx, cy, r):
    return ("ring", cx, cy, r)


def arc(cx, cy, r, start_deg, end_deg):
    return ("arc", cx, cy, r, math.radians(start_deg), math.radians(end_deg))


def disc(cx, cy, r):
    return ("disc", cx, cy, r)


GLYPHS = {
    "p": (1.0, [capsule(0.1, 1.0, 0.1, -0.45), ring(0.5, 0.5, 0.4)]),
    "i": (0.2, [capsule(0.1, 0.0, 0.1, 1.0), disc(0.1, 1.3, 0.12)]),
    "e": (1.0, [capsule(0.1, 0.5, 0.9, 0.5), arc(0.5, 0.5, 0.4, 0.0, 320.0)]),
    "a": (1.0, [ring(0.5, 0.5, 0.4), capsule(0.9, 0.0, 0.9, 1.0)]),
    "y": (1.0, [capsule(0.08, 1.0, 0.5, 0.12), capsule(0.92, 1.0, 0.3, -0.45)]),
}


def word_shapes(text):
    shapes = []
    x = 0.0
    for index, char in enumerate(text):
        advance, parts = GLYPHS[char]
        for part in parts:
            shapes.append(shift(part, x))
        x += advance + (GAP if index + 1 < len(text) else 0.0)
    return shapes, x


def shift(shape, dx):
    kind = shape[0]
    if kind == "capsule":
        _, ax, ay, bx, by = shape
        return (kind, ax + dx, ay, bx + dx, by)
    return (kind, shape[1] + dx) + shape[2:]


def distance(shape, x, y):
    """Signed distance (negative inside) from (x, y) to one stroke, in units."""
    kind = shape[0]
    if kind == "capsule":
        _, ax, ay, bx, by = shape
        px, py, vx, vy = x - ax, y - ay, bx - ax, by - ay
        t = max(0.0, min(1.0, (px * vx + py * vy) / (vx * vx + vy * vy)))
        return math.hypot(px - vx * t, py - vy * t) - HALF
    if kind == "ring":
        _, cx, cy, r = shape
        return abs(math.hypot(x - cx, y - cy) - r) - HALF
    if kind == "disc":
        _, cx, cy, r = shape
        return math.hypot(x - cx, y - cy) - r
    _, cx, cy, r, start, end = shape
    angle = math.atan2(y - cy, x - cx) % (2 * math.pi)
    if start <= angle <= end:
        return abs(math.hypot(x - cx, y - cy) - r) - HALF
    ends = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (start, end)]
    return min(math.hypot(x - ex, y - ey) for ex, ey in ends) - HALF


def rounded_square(x, y, size, radius):
    """Signed distance in pixels to a square with rounded corners."""
    half = size / 2.0
    return lambda px, py: _box(px - x - half, py - y - half, half - radius, radius)


def _box(dx, dy, inner, radius):
    qx, qy = abs(dx) - inner, abs(dy) - inner
    outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
    return outside + min(max(qx, qy), 0.0) - radius


def coverage(d_px):
    return max(0.0, min(1.0, 0.5 - d_px))


def mix(base, top, amount):
    return tuple(b + (t - b) * amount for b, t in zip(base, top))


class Layer:
    """Strokes placed in the image: unit space mapped to pixels by origin and scale."""

    def __init__(self, shapes, left, baseline, scale, colour, box):
        self.shapes, self.left, self.baseline, self.scale = shapes, left, baseline, scale
        self.colour, self.box = colour, box

    def cover(self, px, py):
        x0, y0, x1, y1 = self.box
        if px < x0 or px > x1 or py < y0 or py > y1:
            return 0.0
        ux = (px - self.left) / self.scale
        uy = (self.baseline - py) / self.scale
        d = min(distance(shape, ux, uy) for shape in self.shapes)
        return coverage(d * self.scale)


def word_layer(left, baseline, scale):
    shapes, width = word_shapes("pipepay")
    box = (left - 2, baseline - INK_TOP * scale - 2, left + width * scale + 2, baseline - INK_BOTTOM * scale + 2)
    return Layer(shapes, left, baseline, scale, WORD, box)


def word_width(scale):
    return word_shapes("pipepay")[1] * scale


def draw(width, height, mark=None, word=None):
    """mark: (left, top, size) of the rounded mark; word: (left, baseline, scale)."""
    layers = []
    square = None
    if mark is not None:
        left, top, size = mark
        square = rounded_square(left, top, size, size * 0.24)
        # The "p" inside the mark: ink spans x 0..1 and y INK_BOTTOM..1 units.
        scale = size * 0.56 / (1.0 - INK_BOTTOM)
        glyph_left = left + (size - 1.0 * scale) / 2.0
        glyph_baseline = top + (size - (1.0 - INK_BOTTOM) * scale) / 2.0 + 1.0 * scale
        box = (left, top, left + size, top + size)
        layers.append(Layer(GLYPHS["p"][1], glyph_left, glyph_baseline, scale, BRAND, box))
    if word is not None:
        layers.append(word_layer(*word))

    rows = bytearray()
    for py in range(height):
        rows.append(0)  # PNG filter type "None" for this row
        for px in range(width):
            cx, cy = px + 0.5, py + 0.5
            colour = BRAND
            if square is not None:
                colour = mix(colour, MARK, coverage(square(cx, cy)))
            for layer in layers:
                amount = layer.cover(cx, cy)
                if amount > 0.0:
                    colour = mix(colour, layer.colour, amount)
            rows.extend(int(round(channel)) for channel in colour)
    return png(width, height, bytes(rows))


def png(width, height, raw):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def centred_square(width, height, size):
    return ((width - size) / 2.0, (height - size) / 2.0, size)


def stacked(width, height, mark_size, gap, scale):
    """Mark above the wordmark, the pair centred in the image."""
    word_height = (INK_TOP - INK_BOTTOM) * scale
    top = (height - (mark_size + gap + word_height)) / 2.0
    mark = ((width - mark_size) / 2.0, top, mark_size)
    word = ((width - word_width(scale)) / 2.0, top + mark_size + gap + INK_TOP * scale, scale)
    return mark, word


def side_by_side(width, height, margin, gap):
    """Mark on the left, the wordmark filling the rest of the width."""
    size = height - 2 * margin
    scale = (width - 2 * margin - size - gap) / word_shapes("pipepay")[1]
    ink_middle = (INK_TOP + INK_BOTTOM) / 2.0
    baseline = height / 2.0 + ink_middle * scale
    return (margin, margin, size), (margin + size + gap, baseline, scale)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    layouts = {
        # Kommo asks for a 10 px margin around the content of the 400x272 logo.
        "logo_main.png": stacked(400, 272, 112, 22, 34.0),
        "logo_medium.png": side_by_side(240, 84, 12, 14),
        "logo_min.png": (centred_square(84, 84, 60), None),
        "logo.png": stacked(130, 100, 44, 8, 13.0),
        "logo_small.png": (centred_square(108, 108, 76), None),
        "logo_dp.png": stacked(174, 109, 48, 8, 14.0),
    }
    for name, (width, height) in SIZES.items():
        mark, word = layouts[name]
        data = draw(width, height, mark, word)
        if len(data) > LIMIT_BYTES:
            raise SystemExit(f"{name}: {len(data)} bytes is over Kommo's 300 KB limit")
        (OUT / name).write_bytes(data)
        print(f"{name}: {width}x{height}, {len(data)} bytes")


if __name__ == "__main__":
    main()
