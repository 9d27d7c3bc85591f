"""The demo world: tiny synthetic scenes that stand in for real photos in the demo study.

A scene is one to three flat, saturated shapes on a plain background, each in a cell of a 3x3
grid, optionally with a short word printed in large block letters along the bottom row. It is
designed to be learnable by the tiny twins (a random frozen vision encoder seeing 48x48 pixels,
6x6 patches, a 2-layer LLM trained for a minute): few colours, three shape kinds, at most one shape
of each kind and of each colour (so "the circle" and "the red shape" always name one object), a
single big "main" shape, and a handful of words.

Everything is a pure function of a ``random.Random`` passed in: no global RNG, no set iteration,
and text is drawn with a built-in bitmap font, so the same seed gives byte-identical images on any
machine with the same Pillow/zlib.

The fact helpers at the bottom are the ground truth the captions, the instruction data and the
demo benchmarks are written from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

# Saturated colours whose names a tiny model can learn; far apart in RGB.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 225),
    "yellow": (245, 215, 20),
    "purple": (145, 50, 195),
    "orange": (245, 130, 20),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)

# Short words with few shared letters, printed in capitals; answers use the lowercase form.
WORDS: tuple[str, ...] = ("cat", "sun", "box", "pig", "jet", "zoo")

SIZES: tuple[str, ...] = ("big", "small")
GRID = 3
ROW_NAMES: tuple[str, ...] = ("top", "middle", "bottom")
COL_NAMES: tuple[str, ...] = ("left", "center", "right")

# Probability that a scene carries a word (TextVQA-like questions need enough of them).
WORD_PROBABILITY = 0.35

# Fraction of a grid cell the shape's bounding box covers.
_SIZE_FRACTION = {"big": 0.92, "small": 0.62}


@dataclass(frozen=True)
class Shape:
    kind: str  # one of SHAPES
    color: str  # a key of COLORS
    row: int  # 0 (top) .. 2 (bottom)
    col: int  # 0 (left) .. 2 (right)
    size: str  # "big" | "small"

    @property
    def name(self) -> str:
        """``"red circle"``: unique within a scene because kinds and colours never repeat."""
        return f"{self.color} {self.kind}"

    @property
    def position(self) -> str:
        """Where it sits in words: ``"top left"``, ``"center"``, ``"bottom right"``..."""
        return position_name(self.row, self.col)


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]  # shapes[0] is the big main shape; the others are small
    background: str  # a key of BACKGROUNDS
    word: str | None = None  # lowercase word printed along the bottom row, if any

    def to_dict(self) -> dict:
        """A JSON-friendly form (kept beside generated data so benchmarks can be audited)."""
        return {
            "background": self.background,
            "word": self.word,
            "shapes": [
                {"kind": s.kind, "color": s.color, "row": s.row, "col": s.col, "size": s.size}
                for s in self.shapes
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(
            shapes=tuple(Shape(**s) for s in data["shapes"]),
            background=data["background"],
            word=data.get("word"),
        )


def with_article(phrase: str) -> str:
    """``"a red circle"``, ``"an orange square"``."""
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def position_name(row: int, col: int) -> str:
    if row == 1 and col == 1:
        return "center"
    if row == 1:
        return COL_NAMES[col]
    if col == 1:
        return ROW_NAMES[row]
    return f"{ROW_NAMES[row]} {COL_NAMES[col]}"


def random_scene(rng: random.Random, *, word_probability: float = WORD_PROBABILITY) -> Scene:
    """Draw a scene: 1-3 shapes of distinct kinds and colours in distinct cells, maybe a word."""
    word = rng.choice(WORDS) if rng.random() < word_probability else None
    # The word takes the bottom row, so shapes then live in the top two rows.
    rows = GRID - 1 if word else GRID
    cells = [(r, c) for r in range(rows) for c in range(GRID)]
    count = rng.choice((1, 2, 3))
    kinds = rng.sample(SHAPES, count)
    colors = rng.sample(COLOR_NAMES, count)
    places = rng.sample(cells, count)
    shapes = tuple(
        Shape(kind=k, color=c, row=r, col=col, size="big" if i == 0 else "small")
        for i, (k, c, (r, col)) in enumerate(zip(kinds, colors, places, strict=True))
    )
    return Scene(shapes=shapes, background=rng.choice(BACKGROUND_NAMES), word=word)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

# 5x7 block glyphs for the letters of WORDS (a bitmap font keeps rendering identical everywhere).
_GLYPHS: dict[str, tuple[str, ...]] = {
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "B": ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
    "C": ("01111", "10000", "10000", "10000", "10000", "10000", "01111"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "G": ("01111", "10000", "10000", "10011", "10001", "10001", "01111"),
    "I": ("11111", "00100", "00100", "00100", "00100", "00100", "11111"),
    "J": ("00111", "00010", "00010", "00010", "00010", "10010", "01100"),
    "N": ("10001", "11001", "10101", "10011", "10001", "10001", "10001"),
    "O": ("01110", "10001", "10001", "10001", "10001", "10001", "01110"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "S": ("01111", "10000", "10000", "01110", "00001", "00001", "11110"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "U": ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),
    "X": ("10001", "10001", "01010", "00100", "01010", "10001", "10001"),
    "Z": ("11111", "00001", "00010", "00100", "01000", "10000", "11111"),
}


def _draw_word(draw: ImageDraw.ImageDraw, word: str, size: int, ink: tuple[int, int, int]) -> None:
    """Print ``word`` in capitals, centred in the bottom third, as large as fits."""
    letters = word.upper()
    gap_units = 1  # one glyph column between letters
    width_units = len(letters) * 5 + (len(letters) - 1) * gap_units
    band_top, band_height = size * 2 // 3, size // 3
    unit = max(1, min((size * 9 // 10) // width_units, (band_height * 9 // 10) // 7))
    x0 = (size - width_units * unit) // 2
    y0 = band_top + (band_height - 7 * unit) // 2
    for i, letter in enumerate(letters):
        glyph = _GLYPHS[letter]
        gx = x0 + i * (5 + gap_units) * unit
        for gy, line in enumerate(glyph):
            for dx, bit in enumerate(line):
                if bit == "1":
                    left, top = gx + dx * unit, y0 + gy * unit
                    draw.rectangle((left, top, left + unit - 1, top + unit - 1), fill=ink)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, size: int) -> None:
    cell = size / GRID
    extent = cell * _SIZE_FRACTION[shape.size]
    cx, cy = (shape.col + 0.5) * cell, (shape.row + 0.5) * cell
    left, top = round(cx - extent / 2), round(cy - extent / 2)
    right, bottom = round(cx + extent / 2) - 1, round(cy + extent / 2) - 1
    fill = COLORS[shape.color]
    if shape.kind == "circle":
        draw.ellipse((left, top, right, bottom), fill=fill)
    elif shape.kind == "square":
        draw.rectangle((left, top, right, bottom), fill=fill)
    elif shape.kind == "triangle":
        draw.polygon([(round(cx), top), (right, bottom), (left, bottom)], fill=fill)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}; expected one of {SHAPES}")


def render_scene(scene: Scene, size: int = 96) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``size`` x ``size`` pixels (no anti-aliasing: exact)."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape, size)
    if scene.word:
        _draw_word(draw, scene.word, size, ink=word_ink(scene))
    return image


def word_ink(scene: Scene) -> tuple[int, int, int]:
    """Letters are the background's opposite: black on white, white on black."""
    return (0, 0, 0) if scene.background == "white" else (255, 255, 255)


def word_ink_name(scene: Scene) -> str:
    return "black" if scene.background == "white" else "white"


# ---------------------------------------------------------------------------------------------
# Facts: the ground truth every caption, instruction and benchmark question is written from
# ---------------------------------------------------------------------------------------------


def count_shapes(scene: Scene) -> int:
    return len(scene.shapes)


def main_shape(scene: Scene) -> Shape:
    """The single big shape (the object a short caption is about)."""
    return scene.shapes[0]


def shape_of_kind(scene: Scene, kind: str) -> Shape | None:
    return next((s for s in scene.shapes if s.kind == kind), None)


def color_of(scene: Scene, kind: str) -> str | None:
    """Colour of the shape of ``kind``, or None when the scene has none."""
    shape = shape_of_kind(scene, kind)
    return shape.color if shape else None


def has_object(scene: Scene, *, kind: str | None = None, color: str | None = None) -> bool:
    """Is there a shape matching every given attribute? (POPE-like existence questions.)"""
    return any((kind is None or s.kind == kind) and (color is None or s.color == color) for s in scene.shapes)


def leftmost(scene: Scene) -> Shape | None:
    """The shape strictly left of all others, or None when two share the leftmost column."""
    return _strict_extreme(scene, key=lambda s: s.col)


def rightmost(scene: Scene) -> Shape | None:
    return _strict_extreme(scene, key=lambda s: -s.col)


def topmost(scene: Scene) -> Shape | None:
    return _strict_extreme(scene, key=lambda s: s.row)


def _strict_extreme(scene: Scene, key) -> Shape | None:
    ranked = sorted(scene.shapes, key=key)
    if len(ranked) > 1 and key(ranked[0]) == key(ranked[1]):
        return None
    return ranked[0]


def relation(a: Shape, b: Shape) -> str | None:
    """``"left"`` / ``"right"`` when ``a`` is left/right of ``b`` (same columns: None)."""
    if a.col < b.col:
        return "left"
    if a.col > b.col:
        return "right"
    return None


def absent_objects(scene: Scene) -> list[tuple[str, str]]:
    """Every (colour, kind) pair not in the scene, in a fixed order (negatives for yes/no questions)."""
    present = {(s.color, s.kind) for s in scene.shapes}
    return [(c, k) for c in COLOR_NAMES for k in SHAPES if (c, k) not in present]


def absent_kinds(scene: Scene) -> list[str]:
    return [k for k in SHAPES if not has_object(scene, kind=k)]


def absent_colors(scene: Scene) -> list[str]:
    return [c for c in COLOR_NAMES if not has_object(scene, color=c)]


def ocr_tokens(scene: Scene, rng: random.Random, max_distractors: int = 2) -> list[str]:
    """OCR tokens for a TextVQA-like prompt: the printed word among 0-2 other words, shuffled.

    Real TextVQA lists an OCR system's tokens in the prompt; distractors keep the answer from being
    "copy the only token". Empty when the scene has no word.
    """
    if not scene.word:
        return []
    others = [w for w in WORDS if w != scene.word]
    tokens = [scene.word, *rng.sample(others, rng.randint(0, max_distractors))]
    rng.shuffle(tokens)
    return tokens
