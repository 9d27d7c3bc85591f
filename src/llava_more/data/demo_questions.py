"""Questions about a demo scene, in the formats the benchmarks of the study ask them.

One place for the wording, so the instruction data teaches exactly what the demo benchmarks test:

- GQA-like short answers ("What color is the circle?" -> "red"),
- POPE-like existence ("Is there a red circle in the image?" -> "yes" / "no"),
- ScienceQA/AI2D-like multiple choice with lettered options (-> "B"),
- TextVQA-like "what word is written" with the OCR tokens listed in the prompt (-> "cat").

``prompt_text(qa)`` renders the text exactly as lmms-eval's task would (question, options or OCR
tokens, then the task's post-prompt); the image token is added by the caller. Short answers are
lowercase without punctuation, which lmms-eval's exact-match and POPE scoring accept verbatim.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from llava_more.data import demo_world as world
from llava_more.data.demo_world import Scene

SHORT_ANSWER_PROMPT = "\nAnswer the question using a single word or phrase."
MULTIPLE_CHOICE_PROMPT = "\nAnswer with the option's letter from the given choices directly."

# Families (also the ``family`` field of a QA): the benchmark each one mirrors.
SHORT = "short"  # GQA
EXISTENCE = "existence"  # POPE
CHOICE = "choice"  # ScienceQA-IMG / AI2D / MMBench
WORD = "word"  # TextVQA with OCR tokens

WORD_QUESTIONS = (
    "what word is written in the image?",
    "what does the text in the image say?",
    "what is the word at the bottom of the image?",
)


@dataclass(frozen=True)
class QA:
    family: str
    question: str
    answer: str
    choices: tuple[str, ...] = ()
    ocr_tokens: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "question": self.question,
            "answer": self.answer,
            "choices": list(self.choices),
            "ocr_tokens": list(self.ocr_tokens),
        }


def prompt_text(qa: QA) -> str:
    """The user text (without ``<image>``) in the lmms-eval task format for ``qa.family``."""
    if qa.family == CHOICE:
        options = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(qa.choices))
        return f"{qa.question}\n{options}{MULTIPLE_CHOICE_PROMPT}"
    if qa.family == WORD:
        # TextVQA capitalises the question and appends the OCR tokens before the post-prompt.
        ocr = f"\nReference OCR token: {', '.join(qa.ocr_tokens)}" if qa.ocr_tokens else ""
        return f"{qa.question.capitalize()}{ocr}{SHORT_ANSWER_PROMPT}"
    return f"{qa.question}{SHORT_ANSWER_PROMPT}"


# ---------------------------------------------------------------------------------------------
# GQA-like short answers
# ---------------------------------------------------------------------------------------------


def short_answer_candidates(scene: Scene) -> list[tuple[str, str]]:
    """Every (question, answer) with one unambiguous short answer, in a fixed order."""
    main = world.main_shape(scene)
    qas: list[tuple[str, str]] = [(f"What color is the {s.kind}?", s.color) for s in scene.shapes]
    qas += [(f"What shape is the {s.color} object?", s.kind) for s in scene.shapes]
    qas += [
        ("How many shapes are there?", str(world.count_shapes(scene))),
        ("What color is the background?", scene.background),
        ("What color is the big shape?", main.color),
        ("What shape is the biggest?", main.kind),
    ]
    qas += [(f"Where is the {s.name}?", s.position) for s in scene.shapes]
    for side, pick in (("left", world.leftmost), ("right", world.rightmost)):
        shape = pick(scene)
        if shape is not None and world.count_shapes(scene) > 1:
            qas.append((f"Which shape is on the {side}?", shape.kind))
    others = scene.shapes[1:]
    for other in others:
        side = world.relation(main, other)
        if side:
            qas.append((f"Is the {main.kind} to the left or to the right of the {other.kind}?", side))
    return qas


def short_answer_question(scene: Scene, rng: random.Random) -> QA:
    question, answer = rng.choice(short_answer_candidates(scene))
    return QA(SHORT, question, answer)


# ---------------------------------------------------------------------------------------------
# POPE-like existence
# ---------------------------------------------------------------------------------------------


def existence_question(scene: Scene, rng: random.Random, answer: bool | None = None) -> QA:
    """A yes/no "Is there a {colour} {kind} (or a {kind}, or a {colour} shape) in the image?" question.

    Negatives are objects absent from the scene; like POPE's "adversarial" split, half of them
    share the colour or the kind of an object that is present, so a model must look at both.
    """
    if answer is None:
        answer = rng.random() < 0.5
    form = rng.choice(("full", "full", "kind", "color"))
    if form == "kind" and (answer or world.absent_kinds(scene)):
        kind = rng.choice(scene.shapes).kind if answer else rng.choice(world.absent_kinds(scene))
        return QA(EXISTENCE, f"Is there {world.with_article(kind)} in the image?", "yes" if answer else "no")
    if form == "color":
        color = rng.choice(scene.shapes).color if answer else rng.choice(world.absent_colors(scene))
        return QA(
            EXISTENCE, f"Is there {world.with_article(color)} shape in the image?", "yes" if answer else "no"
        )
    if answer:
        shape = rng.choice(scene.shapes)
        color, kind = shape.color, shape.kind
    else:
        absent = world.absent_objects(scene)
        near = [
            (c, k) for c, k in absent if world.has_object(scene, color=c) or world.has_object(scene, kind=k)
        ]
        color, kind = rng.choice(near if near and rng.random() < 0.5 else absent)
    return QA(
        EXISTENCE,
        f"Is there {world.with_article(color + ' ' + kind)} in the image?",
        "yes" if answer else "no",
    )


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------


def multiple_choice_question(scene: Scene, rng: random.Random, n_choices: int = 4) -> QA:
    """A lettered question about the main shape's colour or kind, or the number of shapes."""
    main = world.main_shape(scene)
    topic = rng.choice(("color", "kind", "count"))
    if topic == "color":
        question, correct, pool = f"What color is the {main.kind}?", main.color, list(world.COLOR_NAMES)
    elif topic == "kind":
        question, correct, pool = "Which shape is the biggest in the image?", main.kind, list(world.SHAPES)
    else:
        question, correct, pool = (
            "How many shapes are in the image?",
            str(world.count_shapes(scene)),
            ["1", "2", "3", "4"],
        )
    wrong = [c for c in pool if c != correct]
    options = [correct, *rng.sample(wrong, min(n_choices - 1, len(wrong)))]
    rng.shuffle(options)
    letter = chr(ord("A") + options.index(correct))
    return QA(CHOICE, question, letter, choices=tuple(options))


# ---------------------------------------------------------------------------------------------
# TextVQA-like
# ---------------------------------------------------------------------------------------------


def word_question(scene: Scene, rng: random.Random) -> QA:
    """What word is printed? Only for scenes with a word; OCR tokens are listed in the prompt."""
    if not scene.word:
        raise ValueError("word_question needs a scene with a word")
    return QA(WORD, rng.choice(WORD_QUESTIONS), scene.word, ocr_tokens=tuple(world.ocr_tokens(scene, rng)))
