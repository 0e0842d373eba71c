"""Draw the 一号通 app icons as PNG files, with no download and no imaging library.

The icon is the logo (web/src/assets/logo.svg): a teal rounded square with one white bar,
一 ("one"). ``any`` icons have rounded corners and a transparent outside; ``maskable`` ones
fill the square and keep the bar inside the central safe zone (a circle of 80 % of the size),
so a launcher may cut any shape. Anti-aliased by 4×4 supersampling.

    python scripts/make_icons.py            # writes web/public/icons/*.png
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "web" / "public" / "icons"
TEAL = (0x0B, 0x6E, 0x69)
WHITE = (0xFF, 0xFF, 0xFF)
SAMPLES = 4


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGBA PNG of ``rows`` (each ``width * 4`` bytes, no filter byte yet)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def inside_rounded(x: float, y: float, radius: float) -> bool:
    """Whether (x, y) in the unit square lies inside it with corners of ``radius``."""
    cx = min(max(x, radius), 1 - radius)
    cy = min(max(y, radius), 1 - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def on_bar(x: float, y: float, left: float, right: float, half: float) -> bool:
    """The bar: a stroke from (left, .5) to (right, .5), ``half`` thick each side, round caps."""
    cx = min(max(x, left), right)
    return (x - cx) ** 2 + (y - 0.5) ** 2 <= half**2


def draw(size: int, maskable: bool) -> bytes:
    # logo.svg: viewBox 32, rx 7, bar from x 7 to 25, stroke 4. Maskable: the bar shrunk
    # into the safe zone, the background square to the edges.
    radius = 0.0 if maskable else 7 / 32
    left, right, half = (0.3, 0.7, 0.045) if maskable else (7 / 32, 25 / 32, 2 / 32)
    rows = []
    step = 1 / (size * SAMPLES)
    for py in range(size):
        row = bytearray()
        for px in range(size):
            teal = white = 0
            for sy in range(SAMPLES):
                y = (py * SAMPLES + sy + 0.5) * step
                for sx in range(SAMPLES):
                    x = (px * SAMPLES + sx + 0.5) * step
                    if not inside_rounded(x, y, radius):
                        continue
                    if on_bar(x, y, left, right, half):
                        white += 1
                    else:
                        teal += 1
            covered = teal + white
            if covered == 0:
                row += b"\x00\x00\x00\x00"
                continue
            rgb = [(TEAL[i] * teal + WHITE[i] * white) // covered for i in range(3)]
            row += bytes([*rgb, 255 * covered // (SAMPLES * SAMPLES)])
        rows.append(bytes(row))
    return png(size, size, rows)


ICONS = {
    "icon-192.png": (192, False),
    "icon-512.png": (512, False),
    "maskable-192.png": (192, True),
    "maskable-512.png": (512, True),
    "apple-touch-icon.png": (180, True),
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (size, maskable) in ICONS.items():
        (OUT / name).write_bytes(draw(size, maskable))
        print(f"{OUT / name}: {size}x{size}{' maskable' if maskable else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
