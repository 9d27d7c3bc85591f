"""Questions about a demo scene, in the formats the benchmarks of the study ask them.

One place for the wording, so the instruction data teaches exactly what the demo benchmarks test:

- GQA-like short answers ("What color is the big shape?" -> "red"),
- POPE-like existence ("Is there a red shape in the image?" -> "yes" / "no"),
- ScienceQA/AI2D-like multiple choice with lettered options (-> "B"), also in MMBench's layout,
  in English and in Chinese,
- MME-like verification ("Is the big shape red?" -> "yes" / "no"; lmms-eval drops MME's "Please answer
  yes or no." and asks for a single word, as here),
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
# Part of every MME question; lmms-eval's MME task removes it before adding the short-answer prompt.
YES_NO_SUFFIX = " Please answer yes or no."
MMBENCH_POST_PROMPTS = {"en": MULTIPLE_CHOICE_PROMPT, "cn": "\n请直接使用所提供的选项字母作为答案回答。"}
# MMBench-CN asks in Chinese; the options stay the demo world's (English) names.
CN_QUESTIONS = {
    "What color is the biggest shape?": "图中最大的形状是什么颜色？",
    "Which shape is the biggest in the image?": "图中最大的形状是哪一个？",
    "How many shapes are in the image?": "图中有多少个形状？",
}

# Families (also the ``family`` field of a QA): the benchmark each one mirrors.
SHORT = "short"  # GQA
EXISTENCE = "existence"  # POPE
CHOICE = "choice"  # ScienceQA-IMG / AI2D / MMBench
WORD = "word"  # TextVQA with OCR tokens
VERIFY = "verify"  # MME perception
MME_PERCEPTION = ("existence", "count", "position", "color", "OCR", "scene")

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
    layout: str = ""  # multiple choice: "" (ScienceQA/AI2D), "mmbench-en" or "mmbench-cn"

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "question": self.question,
            "answer": self.answer,
            "choices": list(self.choices),
            "ocr_tokens": list(self.ocr_tokens),
            "layout": self.layout,
        }


def prompt_text(qa: QA) -> str:
    """The user text (without ``<image>``) in the lmms-eval task format for ``qa.family``."""
    if qa.family == CHOICE and qa.layout.startswith("mmbench-"):
        options = "".join(f"{chr(ord('A') + i)}. {c}\n" for i, c in enumerate(qa.choices))
        return f"{qa.question} There are several options:\n{options}{MMBENCH_POST_PROMPTS[qa.layout[8:]]}"
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
    """Every (question, answer) with one unambiguous short answer, in a fixed order.

    The questions are about what a frozen tiny encoder makes readable (colours, the big shape, the
    count, where things are), so that a tiny LLM can learn them in the demo's few hundred steps.
    """
    main = world.main_shape(scene)
    return [
        ("What color is the big shape?", main.color),
        (f"What color is the {main.kind}?", main.color),
        ("How many shapes are there?", str(world.count_shapes(scene))),
        ("What color is the background?", scene.background),
        ("Where is the big shape?", main.position),
    ]


def short_answer_question(scene: Scene, rng: random.Random) -> QA:
    question, answer = rng.choice(short_answer_candidates(scene))
    return QA(SHORT, question, answer)


# ---------------------------------------------------------------------------------------------
# POPE-like existence
# ---------------------------------------------------------------------------------------------


def existence_phrase(color: str) -> str:
    """POPE asks "Is there a <object> in the image?"; the demo world's objects are its coloured shapes."""
    return f"Is there {world.with_article(color)} shape in the image?"


def near_colors(color: str) -> list[str]:
    """The colours next to ``color`` on the demo palette's hue circle (POPE's "adversarial" negatives)."""
    names = world.COLOR_NAMES
    i = names.index(color)
    return [names[(i - 1) % len(names)], names[(i + 1) % len(names)]]


def existence_question(scene: Scene, rng: random.Random, answer: bool | None = None) -> QA:
    """A yes/no "Is there a {colour} shape in the image?" question.

    Negatives are colours absent from the scene; like POPE's "adversarial" split, half of them are
    next to a present colour on the palette, so a model must tell neighbouring hues apart.
    """
    if answer is None:
        answer = rng.random() < 0.5
    if answer:
        return QA(EXISTENCE, existence_phrase(rng.choice(scene.shapes).color), "yes")
    absent = world.absent_colors(scene)
    near = [c for c in absent if any(c in near_colors(s.color) for s in scene.shapes)]
    color = rng.choice(near if near and rng.random() < 0.5 else absent)
    return QA(EXISTENCE, existence_phrase(color), "no")


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------


def multiple_choice_question(scene: Scene, rng: random.Random, n_choices: int = 4) -> QA:
    """A lettered question about the main shape's colour or kind, or the number of shapes."""
    main = world.main_shape(scene)
    topic = rng.choice(("color", "kind", "count"))
    if topic == "color":
        question, correct, pool = "What color is the biggest shape?", main.color, list(world.COLOR_NAMES)
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


def in_mmbench_layout(qa: QA, scene: Scene, language: str) -> QA:
    """``qa`` (from ``multiple_choice_question``) laid out as MMBench asks it, in ``language`` (en, cn)."""
    question = CN_QUESTIONS[qa.question] if language == "cn" else qa.question
    return QA(CHOICE, question, qa.answer, choices=qa.choices, layout=f"mmbench-{language}")


# ---------------------------------------------------------------------------------------------
# MME-like verification pairs
# ---------------------------------------------------------------------------------------------


def count_statement(n: int) -> str:
    return (
        "Is there exactly one shape in the image?"
        if n == 1
        else f"Are there exactly {n} shapes in the image?"
    )


def verification_pair(scene: Scene, category: str, rng: random.Random) -> tuple[str, str]:
    """(question answered yes, question answered no) about ``scene`` for an MME perception category."""
    shape = world.main_shape(scene)
    if category == "existence":
        present = rng.choice(scene.shapes).color
        return existence_phrase(present), existence_phrase(rng.choice(world.absent_colors(scene)))
    if category == "count":
        n = world.count_shapes(scene)
        return count_statement(n), count_statement(rng.choice([m for m in (1, 2, 3) if m != n]))
    if category == "position":
        cells = [
            (r, c) for r in range(world.GRID) for c in range(world.GRID) if (r, c) != (shape.row, shape.col)
        ]
        wrong = world.position_name(*rng.choice(cells))
        return (f"Is the big shape in the {shape.position} of the image?",
                f"Is the big shape in the {wrong} of the image?")  # fmt: skip
    if category == "color":
        wrong = rng.choice([c for c in world.COLOR_NAMES if c != shape.color])
        return f"Is the big shape {shape.color}?", f"Is the big shape {wrong}?"
    if category == "OCR":
        if not scene.word:
            raise ValueError("an OCR verification needs a scene with a word")
        wrong = rng.choice([w for w in world.WORDS if w != scene.word])
        return (f'Is the word "{scene.word.upper()}" written in the image?',
                f'Is the word "{wrong.upper()}" written in the image?')  # fmt: skip
    if category == "scene":
        wrong = next(b for b in world.BACKGROUND_NAMES if b != scene.background)
        return f"Is the background {scene.background}?", f"Is the background {wrong}?"
    raise ValueError(f"unknown MME perception category {category!r}")


def verification_questions(scene: Scene, rng: random.Random) -> list[QA]:
    """One or both questions of a verification pair (random category and order), as QAs."""
    categories = [c for c in MME_PERCEPTION if c != "OCR" or scene.word]
    yes, no = verification_pair(scene, rng.choice(categories), rng)
    pair = [QA(VERIFY, yes, "yes"), QA(VERIFY, no, "no")]
    rng.shuffle(pair)
    return pair if rng.random() < 0.5 else pair[:1]


# ---------------------------------------------------------------------------------------------
# TextVQA-like
# ---------------------------------------------------------------------------------------------


def word_question(scene: Scene, rng: random.Random) -> QA:
    """What word is printed? Only for scenes with a word; OCR tokens are listed in the prompt."""
    if not scene.word:
        raise ValueError("word_question needs a scene with a word")
    return QA(WORD, rng.choice(WORD_QUESTIONS), scene.word, ocr_tokens=tuple(world.ocr_tokens(scene, rng)))
