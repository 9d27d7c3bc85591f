"""Demo twin of LLaVA-Instruct-665K: 1-3 turn conversations about rendered scenes.

Like the real mix, it blends long-form chat (LLaVA-Instruct-150K style) with academic short-answer
data carrying LLaVA-1.5's answer-format prompts, and ~5% text-only conversations (no ``image``
key). The short-answer kinds are exactly the demo benchmark formats (``demo_questions``): GQA-like,
POPE-like yes/no, MME-like verification, lettered multiple choice (ScienceQA's layout and MMBench's,
English and Chinese) and TextVQA-like with OCR tokens. The real LLMs bring their answer formats and
some Chinese from pretraining; the tiny random ones can only learn them here.

The proportions are exact (``MIX``), the order is shuffled by the seed, and every record draws
from its own RNG, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from llava_more.data import demo_captions, demo_questions, demo_world
from llava_more.data.demo_files import (
    DemoDataset,
    exact_split,
    finish_dataset,
    image_relpath,
    prepare_out_dir,
    record_rng,
    save_png,
    write_dataset,
)
from llava_more.data.demo_questions import QA, prompt_text
from llava_more.data.demo_world import Scene
from llava_more.errors import DataError
from llava_more.text.templates import IMAGE_TOKEN

IMAGE_SIZE = 96
# Most question-answer turns per image of the short-answer kinds, where params.yaml sets none.
DEFAULT_MAX_TURNS = 3

# Share of each conversation kind (sums to 1).
MIX: dict[str, float] = {
    "short": 0.25,  # GQA / VQAv2-like short answers, 1-3 turns
    "existence": 0.15,  # POPE-like yes/no, 1-3 turns
    "verify": 0.10,  # MME-like "...? Please answer yes or no.", one or both answers of a pair
    "choice": 0.10,  # lettered multiple choice, 1 turn
    "word": 0.10,  # TextVQA-like with OCR tokens (+ short follow-ups)
    "conversation": 0.15,  # free-form chat answers in full sentences, 1-3 turns
    "detail": 0.10,  # detailed description, 1 turn
    "text": 0.05,  # text-only, no image
}
# Layouts of the multiple-choice questions: ScienceQA/AI2D's, MMBench's in English and in Chinese.
CHOICE_LAYOUTS = (("", 0.5), ("en", 0.25), ("cn", 0.25))

# Where LLaVA-1.5's data put the image token: mostly first, sometimes after the question.
IMAGE_TOKEN_LAST_PROBABILITY = 0.1

_DETAIL_PROMPTS = (
    "Describe the image in detail.",
    "Give a detailed description of this image.",
    "What is in this picture? Describe it thoroughly.",
)


def generate_demo_instruct(
    out_dir: str | Path,
    n: int,
    seed: int,
    mix: dict[str, float] | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
) -> DemoDataset:
    """Write ``n`` instruction-tuning conversations (LLaVA-665K layout) under ``out_dir``.

    ``mix`` gives the share of each conversation kind (keys of ``MIX``; default ``MIX``);
    ``max_turns`` bounds the question-answer turns per image of the short-answer kinds (LLaVA-665K
    groups many VQA questions on one image).
    """
    if max_turns < 1:
        raise DataError(f"max_turns must be at least 1, got {max_turns}")
    if n < 1:
        raise DataError(f"demo instruction size must be at least 1, got {n}")
    mix = check_mix(mix) if mix is not None else MIX
    return write_dataset(out_dir, lambda staging: _write_instruct(staging, n, seed, mix, max_turns))


def _write_instruct(out: Path, n: int, seed: int, mix: dict[str, float], max_turns: int) -> DemoDataset:
    images_dir = prepare_out_dir(out)
    kinds = exact_split(n, mix, random.Random(f"llava-more/instruct-mix/{seed}"))
    records = []
    for index, kind in enumerate(kinds):
        rng = record_rng(f"instruct-{kind}", seed, index)
        record_id = f"{kind}-{index:09d}"
        if kind == "text":
            records.append({"id": record_id, "conversations": _text_only(rng)})
            continue
        scene = demo_world.random_scene(
            rng, word_probability=1.0 if kind == "word" else demo_world.WORD_PROBABILITY
        )
        turns = _TURN_BUILDERS[kind](scene, rng, max_turns)
        relpath = image_relpath(index)
        save_png(demo_world.render_scene(scene, IMAGE_SIZE), images_dir, relpath)
        records.append({"id": record_id, "image": relpath, "conversations": _with_image_token(turns, rng)})
    counts = {"records": n, "images": n - kinds.count("text")}
    for kind in mix:
        counts[kind] = kinds.count(kind)
    manifest = {
        "generator": "llava_more.data.demo_instruct",
        "seed": seed,
        "size": n,
        "image_size": IMAGE_SIZE,
        "mix": mix,
        "max_turns": max_turns,
        "counts": counts,
    }
    return finish_dataset(out, records, manifest)


def check_mix(mix: dict[str, float]) -> dict[str, float]:
    """A valid conversation mix: known kinds, non-negative shares summing to 1."""
    unknown = sorted(set(mix) - set(MIX))
    if unknown:
        raise DataError(f"unknown conversation kinds {unknown} in the instruct mix; kinds: {', '.join(MIX)}")
    if any(v < 0 for v in mix.values()) or abs(sum(mix.values()) - 1) > 1e-6:
        raise DataError(f"instruct mix shares must be non-negative and sum to 1, got {mix}")
    return {k: float(mix.get(k, 0.0)) for k in MIX}


def _with_image_token(turns: list[tuple[str, str]], rng: random.Random) -> list[dict]:
    """LLaVA conversation turns; the first human turn carries the single ``<image>``."""
    conversations = []
    for i, (question, answer) in enumerate(turns):
        if i == 0:
            last = rng.random() < IMAGE_TOKEN_LAST_PROBABILITY
            question = f"{question}\n{IMAGE_TOKEN}" if last else f"{IMAGE_TOKEN}\n{question}"
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return conversations


def _distinct(draw: Callable[[], QA], count: int) -> list[QA]:
    """Up to ``count`` questions with different wording (a few tries, then settle for fewer)."""
    seen: dict[str, QA] = {}
    for _ in range(count * 4):
        qa = draw()
        seen.setdefault(qa.question, qa)
        if len(seen) == count:
            break
    return list(seen.values())


def _short_turns(scene: Scene, rng: random.Random, max_turns: int) -> list[tuple[str, str]]:
    def draw() -> QA:
        if rng.random() < 0.2:
            return demo_questions.existence_question(scene, rng)
        return demo_questions.short_answer_question(scene, rng)

    return [(prompt_text(qa), qa.answer) for qa in _distinct(draw, rng.randint(1, max_turns))]


def _existence_turns(scene: Scene, rng: random.Random, max_turns: int) -> list[tuple[str, str]]:
    qas = _distinct(lambda: demo_questions.existence_question(scene, rng), rng.randint(1, max_turns))
    return [(prompt_text(qa), qa.answer) for qa in qas]


def _choice_turns(scene: Scene, rng: random.Random, max_turns: int) -> list[tuple[str, str]]:
    qa = demo_questions.multiple_choice_question(scene, rng)
    layouts, weights = zip(*CHOICE_LAYOUTS, strict=True)
    language = rng.choices(layouts, weights)[0]
    if language:
        qa = demo_questions.in_mmbench_layout(qa, scene, language)
    return [(prompt_text(qa), qa.answer)]


def _verify_turns(scene: Scene, rng: random.Random, max_turns: int) -> list[tuple[str, str]]:
    return [(prompt_text(qa), qa.answer) for qa in demo_questions.verification_questions(scene, rng)]


def _word_turns(scene: Scene, rng: random.Random, max_turns: int) -> list[tuple[str, str]]:
    qa = demo_questions.word_question(scene, rng)
    turns = [(prompt_text(qa), qa.answer)]
    follow_ups = _distinct(
        lambda: demo_questions.short_answer_question(scene, rng), rng.randint(0, max_turns - 1)
    )
    return turns + [(prompt_text(f), f.answer) for f in follow_ups]


def _conversation_turns(scene: Scene, rng: random.Random, max_turns: int) -> list[tuple[str, str]]:
    pool = _chat_pairs(scene, rng)
    return rng.sample(pool, min(len(pool), rng.randint(1, 3)))


def _detail_turns(scene: Scene, rng: random.Random, max_turns: int) -> list[tuple[str, str]]:
    return [(rng.choice(_DETAIL_PROMPTS), demo_captions.recap_caption(scene, rng))]


_TURN_BUILDERS: dict[str, Callable[[Scene, random.Random, int], list[tuple[str, str]]]] = {
    "short": _short_turns,
    "existence": _existence_turns,
    "choice": _choice_turns,
    "verify": _verify_turns,
    "word": _word_turns,
    "conversation": _conversation_turns,
    "detail": _detail_turns,
}


def _chat_pairs(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """Free-form questions with full-sentence answers, all true of ``scene``."""
    shapes = scene.shapes
    count = len(shapes)
    listing = _join([f"{demo_world.with_article(s.size + ' ' + s.name)} in the {s.position}" for s in shapes])
    pairs = [
        ("What do you see in this image?", f"I see {listing}, on a {scene.background} background."),
        (
            "How many shapes are in the picture?",
            "There is one shape in the picture."
            if count == 1
            else f"There are {count} shapes in the picture.",
        ),
        ("What is the background color?", f"The background is {scene.background}."),
    ]
    shape = rng.choice(shapes)
    pairs.append((f"What color is the {shape.kind}?", f"The {shape.kind} is {shape.color}."))
    pairs.append(
        (f"Where is the {shape.name}?", f"The {shape.name} is in the {shape.position} of the image.")
    )
    if scene.word:
        pairs.append(
            (
                "Is there any text in the image?",
                f'Yes, the word "{scene.word.upper()}" is written at the bottom.',
            )
        )
    else:
        pairs.append(("Is there any text in the image?", "No, there is no text in the image."))
    color, kind = rng.choice(demo_world.absent_objects(scene))
    absent = demo_world.with_article(f"{color} {kind}")
    pairs.append((f"Is there {absent} in the image?", f"No, there is no {color} {kind} in the image."))
    return pairs


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_MIXES = (("red", "yellow", "orange"), ("blue", "yellow", "green"), ("red", "blue", "purple"))
_SIDES = {"triangle": "three", "square": "four"}


def _text_only(rng: random.Random) -> list[dict]:
    """A 1-2 turn conversation that needs no image (like the text-only part of the 665K mix)."""
    pool: list[tuple[str, str]] = []
    a, b, mixed = rng.choice(_MIXES)
    pool.append(
        (f"What color do you get when you mix {a} and {b} paint?", f"Mixing {a} and {b} gives {mixed}.")
    )
    kind = rng.choice(demo_world.SHAPES)
    pool.append(
        (
            f"How many sides does a {kind} have?",
            f"A {kind} has {_SIDES[kind]} sides." if kind in _SIDES else "A circle has no straight sides.",
        )
    )
    x, y = rng.randint(1, 5), rng.randint(1, 4)
    pool.append((f"What is {x} plus {y}?", f"{x} plus {y} is {x + y}."))
    word = rng.choice(demo_world.WORDS)
    pool.append((f"Spell the word {word}.", "-".join(word.upper())))
    pool.append(("Name three basic shapes.", "Circle, square and triangle."))
    turns = rng.sample(pool, rng.randint(1, 2))
    return [
        t
        for question, answer in turns
        for t in ({"from": "human", "value": question}, {"from": "gpt", "value": answer})
    ]
