"""Captions of demo scenes in the styles of the study's pre-training sources.

- ``lcs``: BLIP-like (LCS-558K): short, lowercase, accurate, about the main object.
- ``alttext``: LAION-like web alt-text: a few words, random casing and punctuation, sometimes
  off-topic (file names, shop slogans) and sometimes plain wrong about the colour or the shape.
- ``recap``: Recap-DataComp-like: long, dense and accurate, every object, its place, the word.

Each caption is a function of the scene and an ``rng`` only, so generation is reproducible.
"""

from __future__ import annotations

import random

from llava_more.data import demo_world as world
from llava_more.data.demo_world import Scene, Shape

CAPTION_KINDS: tuple[str, ...] = ("lcs", "alttext", "recap")

# Fractions of alt-texts that carry no information about the image, or wrong information.
ALTTEXT_OFF_TOPIC = 0.2
ALTTEXT_WRONG = 0.15

_OFF_TOPIC = (
    "free shipping on all orders",
    "IMG_{n}.jpg",
    "DSC{n}",
    "click here to download",
    "best price guaranteed",
    "image {n}",
    "untitled-{n}",
    "photo by user{n}",
    "new collection {n}",
    "home decor ideas",
)
_ALTTEXT_TEMPLATES = (
    "{color} {kind}",
    "{kind} {color}",
    "{color} {kind} icon",
    "{kind} clipart",
    "{color} {kind} png",
    "simple {kind} vector",
    "{color} {kind} on {background}",
    "flat {color} {kind} illustration",
    "{kind} shape",
)
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


def caption(scene: Scene, kind: str, rng: random.Random) -> str:
    if kind == "lcs":
        return lcs_caption(scene, rng)
    if kind == "alttext":
        return alttext_caption(scene, rng)
    if kind == "recap":
        return recap_caption(scene, rng)
    raise ValueError(f"unknown caption kind {kind!r}; expected one of {CAPTION_KINDS}")


def lcs_caption(scene: Scene, rng: random.Random) -> str:
    main = world.main_shape(scene)
    others = scene.shapes[1:]
    form = rng.randrange(4)
    if scene.word and rng.random() < 0.4:
        return f"the word {scene.word} under {world.with_article(main.name)}"
    if form == 0 or not others:
        return f"{world.with_article(main.name)} on a {scene.background} background"
    if form == 1:
        return f"{world.with_article(main.name)} and {world.with_article(others[0].name)}"
    if form == 2:
        return f"a big {main.name} with {_count_phrase(len(others))} smaller {_plural('shape', len(others))}"
    return f"{_NUMBER_WORDS[len(scene.shapes)]} shapes on a {scene.background} background"


def alttext_caption(scene: Scene, rng: random.Random) -> str:
    roll = rng.random()
    if roll < ALTTEXT_OFF_TOPIC:
        text = rng.choice(_OFF_TOPIC).format(n=rng.randint(100, 9999))
    else:
        main = world.main_shape(scene)
        color, kind = main.color, main.kind
        if roll < ALTTEXT_OFF_TOPIC + ALTTEXT_WRONG:
            # Web alt-text is often about the product or page, not the pixels: a wrong attribute.
            if rng.random() < 0.5:
                color = rng.choice([c for c in world.COLOR_NAMES if c != color])
            else:
                kind = rng.choice([k for k in world.SHAPES if k != kind])
        text = rng.choice(_ALTTEXT_TEMPLATES).format(color=color, kind=kind, background=scene.background)
        if scene.word and rng.random() < 0.3:
            text = f"{scene.word} {text}" if rng.random() < 0.5 else f"{scene.word} logo"
    return _noisy(text, rng)


def _noisy(text: str, rng: random.Random) -> str:
    casing = rng.choice(("lower", "lower", "upper", "title", "as_is"))
    if casing == "lower":
        text = text.lower()
    elif casing == "upper":
        text = text.upper()
    elif casing == "title":
        text = text.title()
    text += rng.choice(("", "", "", ".", "!", "!!", "...", " |", " -", " :)"))
    if rng.random() < 0.15:
        text = rng.choice(("*", "#", "~ ")) + text
    return text


def recap_caption(scene: Scene, rng: random.Random) -> str:
    main = world.main_shape(scene)
    count = world.count_shapes(scene)
    opener = rng.choice(("The image shows", "This image features", "The picture displays"))
    if count == 1:
        sentences = [f"{opener} a single large {main.name} on a plain {scene.background} background."]
    else:
        sentences = [
            f"{opener} {_NUMBER_WORDS[count]} simple geometric shapes on a plain {scene.background} background.",
            f"The largest of them is {world.with_article(main.name)}, {_place(main)}.",
        ]
    for other in scene.shapes[1:]:
        side = world.relation(other, main)
        relative = f", to the {side} of the {main.kind}" if side else ""
        sentences.append(f"A smaller {other.name} sits {_place(other)}{relative}.")
    if scene.word:
        sentences.append(
            f'Along the bottom, the word "{scene.word.upper()}" is written in bold {world.word_ink_name(scene)} '
            "capital letters."
        )
    else:
        sentences.append("There is no text in the image.")
    sentences.append(
        rng.choice(
            (
                "The shapes are flat and solid, with sharp edges and no shading or texture.",
                "The style is minimal and flat, with solid colors and no shadows.",
                "Each shape is filled with a single solid color, giving the image a clean, graphic look.",
            )
        )
    )
    return " ".join(sentences)


def _place(shape: Shape) -> str:
    """``"in the center"``, ``"at the top"``, ``"on the left"``, ``"in the top left corner"`` (+ of the image)."""
    position = shape.position
    if position == "center":
        return "in the center of the image"
    if position in ("top", "bottom"):
        return f"at the {position} of the image"
    if position in ("left", "right"):
        return f"on the {position} side of the image"
    return f"in the {position} corner of the image"


def _count_phrase(n: int) -> str:
    return _NUMBER_WORDS[n]


def _plural(noun: str, n: int) -> str:
    return noun if n == 1 else f"{noun}s"
