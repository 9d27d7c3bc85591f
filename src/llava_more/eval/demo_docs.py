"""Benchmark documents about demo scenes, in the exact record layout of each real lmms-eval dataset.

Each builder returns ``{split: [doc, ...]}`` where a doc has the fields the real task's
``lmms_eval.tasks.<task>.utils`` functions read, so those functions score the demo unchanged.
Images are PIL images here; ``demo_tasks`` stores them. Questions come from
``llava_more.data.demo_questions`` wherever the instruction data asks the same kind of question
(colour, shape, count, position, written word, existence), so a trained demo model can beat chance;
what the instruction data never teaches (video, Chinese prompts, MME's cognition pairs) stays near
chance, as the paper's weakest columns do.

Every doc draws from its own RNG (``record_rng``), so the same seed gives the same benchmark.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from PIL import Image

from llava_more.data import demo_questions as questions
from llava_more.data import demo_world as world
from llava_more.data.demo_files import record_rng
from llava_more.data.demo_world import Scene, Shape

IMAGE_SIZE = 96  # as the demo instruction data (data.demo_instruct.IMAGE_SIZE)
Docs = dict[str, list[dict]]

MME_PERCEPTION = questions.MME_PERCEPTION
MME_COGNITION = ("numerical_calculation", "commonsense_reasoning")
# Image order: cognition early, so any --limit of 4 or more questions scores both halves.
_MME_ORDER = (
    "existence",
    "numerical_calculation",
    "count",
    "commonsense_reasoning",
    "position",
    "color",
    "OCR",
    "scene",
)
POPE_CATEGORIES = ("adversarial", "popular", "random")
SEED_VIDEO_EVERY = 4  # one question in four is about a "video" (SEED-Bench: ~20%)
SEED_VIDEO_FRAMES = 3
MMMU_OPEN_FRACTION = 0.1
_CORNERS = {"circle": 0, "triangle": 3, "square": 4}
_DIRECTIONS = ("left", "right", "up", "down")


def _scene(rng: random.Random, *, word: bool | None = None) -> Scene:
    probability = world.WORD_PROBABILITY if word is None else (1.0 if word else 0.0)
    return world.random_scene(rng, word_probability=probability)


def _image(scene: Scene) -> Image.Image:
    return world.render_scene(scene, IMAGE_SIZE)


def _choice_qa(scene: Scene, rng: random.Random, n_choices: int = 4) -> questions.QA:
    """A lettered question with exactly ``n_choices`` options (kind questions have only three)."""
    for _ in range(20):
        qa = questions.multiple_choice_question(scene, rng, n_choices=n_choices)
        if len(qa.choices) == n_choices:
            return qa
    raise RuntimeError("could not draw a question with enough options")  # unreachable: colour has 6


def _letter_index(qa: questions.QA) -> int:
    return ord(qa.answer) - ord("A")


# ------------------------------------------------------------------------------ short answers


def gqa_docs(n: int, seed: int) -> Docs:
    docs = []
    for i in range(n):
        rng = record_rng("bench-gqa", seed, i)
        scene = _scene(rng)
        qa = questions.short_answer_question(scene, rng)
        docs.append({"question_id": f"{i:06d}", "imageId": f"demo{i:06d}", "question": qa.question,
                     "answer": qa.answer, "image": _image(scene)})  # fmt: skip
    return {"testdev": docs}


def textvqa_docs(n: int, seed: int) -> Docs:
    docs = []
    for i in range(n):
        rng = record_rng("bench-textvqa", seed, i)
        scene = _scene(rng, word=True)
        qa = questions.word_question(scene, rng)
        docs.append({"question_id": i, "image_id": f"demo{i:06d}", "question": qa.question, "answer": qa.answer,
                     "answers": [qa.answer] * 10, "ocr_tokens": list(qa.ocr_tokens), "image": _image(scene)})  # fmt: skip
    return {"validation": docs}


# ------------------------------------------------------------------------------ yes / no


def _negative(scene: Scene, category: str, rng: random.Random, popularity: Counter) -> str:
    """An absent colour, sampled the way POPE samples negative objects for ``category``."""
    absent = world.absent_colors(scene)
    if category == "adversarial":  # next to a present colour on the palette
        near = [c for c in absent if any(c in questions.near_colors(s.color) for s in scene.shapes)]
        return rng.choice(near or absent)
    if category == "popular":  # the most frequent colours of the benchmark's images
        top = max(popularity[c] for c in absent)
        return rng.choice([c for c in absent if popularity[c] == top])
    return rng.choice(absent)


def pope_docs(n: int, seed: int) -> Docs:
    """POPE: per image one "yes" and one "no" question; ``test`` holds all three categories."""
    n_images = max(1, n // 2)
    scenes = [_scene(record_rng("bench-pope", seed, i)) for i in range(n_images)]
    popularity = Counter(s.color for scene in scenes for s in scene.shapes)
    splits: Docs = {c: [] for c in POPE_CATEGORIES}
    docs = []
    for i, scene in enumerate(scenes):
        rng = record_rng("bench-pope-questions", seed, i)
        category = POPE_CATEGORIES[i % len(POPE_CATEGORIES)]
        pairs = [(rng.choice(scene.shapes).color, "yes"), (_negative(scene, category, rng, popularity), "no")]
        image = _image(scene)
        for color, answer in pairs:
            doc = {"question_id": str(len(docs)), "question": questions.existence_phrase(color),
                   "answer": answer, "image_source": f"demo{i:06d}", "category": category, "image": image}  # fmt: skip
            docs.append(doc)
            splits[category].append(doc)
    return {"test": docs, **splits}


def _mme_pair(scene: Scene, category: str, rng: random.Random) -> tuple[str, str]:
    """(question whose answer is Yes, question whose answer is No) about ``scene``."""
    if category in MME_PERCEPTION:
        return questions.verification_pair(scene, category, rng)
    if category == "numerical_calculation":
        n, k = world.count_shapes(scene), rng.randint(1, 5)
        wrong = n + k + rng.choice((-1, 1))
        return (f"Is the number of shapes in the image plus {k} equal to {n + k}?",
                f"Is the number of shapes in the image plus {k} equal to {wrong}?")  # fmt: skip
    if category == "commonsense_reasoning":
        main = world.main_shape(scene)
        right = _CORNERS[main.kind]
        wrong = rng.choice([c for c in (0, 3, 4) if c != right])
        return (
            f"Does the big {main.kind} have {right} corners?",
            f"Does the big {main.kind} have {wrong} corners?",
        )
    raise ValueError(f"unknown MME category {category!r}")


def mme_docs(n: int, seed: int) -> Docs:
    """MME: each image carries a Yes and a No question sharing its ``question_id`` (the image name)."""
    categories = _MME_ORDER
    docs = []
    for i in range(max(1, n // 2)):
        rng = record_rng("bench-mme", seed, i)
        category = categories[i % len(categories)]
        scene = _scene(rng, word=category == "OCR")
        image = _image(scene)
        for question, answer in zip(_mme_pair(scene, category, rng), ("Yes", "No"), strict=True):
            docs.append({"question_id": f"{category}/{i:05d}.png", "question": f"{question}{questions.YES_NO_SUFFIX}",
                         "answer": answer, "category": category, "image": image})  # fmt: skip
    return {"test": docs}


# ------------------------------------------------------------------------------ multiple choice


def scienceqa_docs(n: int, seed: int) -> Docs:
    docs = []
    for i in range(n):
        rng = record_rng("bench-scienceqa", seed, i)
        scene = _scene(rng)
        qa = _choice_qa(scene, rng, n_choices=rng.choice((2, 3, 4)) if rng.random() < 0.5 else 4)
        docs.append({"question": qa.question, "choices": list(qa.choices), "answer": _letter_index(qa), "hint": "",
                     "subject": "natural science", "image": _image(scene)})  # fmt: skip
    return {"test": docs}


def ai2d_docs(n: int, seed: int) -> Docs:
    docs = []
    for i in range(n):
        rng = record_rng("bench-ai2d", seed, i)
        scene = _scene(rng)
        qa = _choice_qa(scene, rng)
        docs.append({"question": qa.question, "options": list(qa.choices), "answer": str(_letter_index(qa)),
                     "image": _image(scene)})  # fmt: skip
    return {"test": docs}


_MMBENCH_CATEGORY = {
    "color": ("attribute_recognition", "finegrained_perception (instance-level)"),
    "kind": ("object_localization", "finegrained_perception (instance-level)"),
    "count": ("image_scene", "coarse_perception"),
}


def _topic(qa: questions.QA) -> str:
    if qa.question.startswith("What color"):
        return "color"
    return "count" if qa.question.startswith("How many") else "kind"


def _mmbench_docs(n: int, seed: int, language: str) -> Docs:
    docs = []
    for i in range(n):
        rng = record_rng(f"bench-mmbench-{language}", seed, i)
        scene = _scene(rng)
        qa = questions.multiple_choice_question(scene, rng)
        topic = _topic(qa)
        question = questions.in_mmbench_layout(qa, scene, language).question
        category, l2_category = _MMBENCH_CATEGORY[topic]
        doc = {"index": i, "question": question, "hint": None, "answer": qa.answer, "category": category,
               "L2-category": l2_category, "source": "demo_world", "split": "dev", "image": _image(scene)}  # fmt: skip
        for j, letter in enumerate("ABCD"):
            doc[letter] = qa.choices[j] if j < len(qa.choices) else None
        docs.append(doc)
    return {"dev": docs}


def mmbench_en_docs(n: int, seed: int) -> Docs:
    return _mmbench_docs(n, seed, "en")


def mmbench_cn_docs(n: int, seed: int) -> Docs:
    return _mmbench_docs(n, seed, "cn")


def _moving_frames(rng: random.Random) -> tuple[Shape, str, list[Image.Image]]:
    """A single shape crossing the grid in one direction, one frame per cell (a tiny "video")."""
    direction = rng.choice(_DIRECTIONS)
    kind, color = rng.choice(world.SHAPES), rng.choice(world.COLOR_NAMES)
    background = rng.choice(world.BACKGROUND_NAMES)
    lane = rng.randrange(3)
    steps = list(range(3)) if direction in ("right", "down") else [2, 1, 0]
    frames = []
    for step in steps[:SEED_VIDEO_FRAMES]:
        row, col = (lane, step) if direction in ("left", "right") else (step, lane)
        frames.append(_image(Scene(shapes=(Shape(kind, color, row, col, "big"),), background=background)))
    return Shape(kind, color, 0, 0, "big"), direction, frames


def seedbench_docs(n: int, seed: int) -> Docs:
    """SEED-Bench: image questions plus "video" questions over a few frames (``data_type``)."""
    docs = []
    for i in range(n):
        rng = record_rng("bench-seedbench", seed, i)
        # Video at index 1, 5, 9...: any --limit of 2 or more scores both parts.
        if i % SEED_VIDEO_EVERY == 1:
            shape, direction, frames = _moving_frames(rng)
            options = list(_DIRECTIONS)
            rng.shuffle(options)
            question, answer, images = (
                f"In which direction is the {shape.name} moving?",
                "ABCD"[options.index(direction)],
                frames,
            )
            data_type = "video"
        else:
            scene = _scene(rng)
            qa = _choice_qa(scene, rng)
            question, answer, options, images = qa.question, qa.answer, list(qa.choices), [_image(scene)]
            data_type = "image"
        docs.append({"question_id": f"{i:06d}", "question": question, "answer": answer, "data_type": data_type,
                     "choice_a": options[0], "choice_b": options[1], "choice_c": options[2], "choice_d": options[3],
                     "image": images})  # fmt: skip
    return {"test": docs}


def mmmu_docs(n: int, seed: int) -> Docs:
    """MMMU: ``<image 1>`` in the question, options as a Python-literal string, mostly multiple choice."""
    docs = []
    for i in range(n):
        rng = record_rng("bench-mmmu", seed, i)
        scene = _scene(rng)
        if rng.random() < MMMU_OPEN_FRACTION:
            qa = questions.short_answer_question(scene, rng)
            question_type, options, answer = "open", [], qa.answer
        else:
            qa = _choice_qa(scene, rng)
            question_type, options, answer = "multiple-choice", list(qa.choices), qa.answer
        doc = {"id": f"validation_Demo_World_{i + 1}", "question": f"<image 1> {qa.question}", "options": repr(options),
               "answer": answer, "question_type": question_type, "subfield": "Demo World", "topic_difficulty": "Easy",
               "img_type": "['Diagrams']", "explanation": "", "image_1": _image(scene)}  # fmt: skip
        for k in range(2, 8):
            doc[f"image_{k}"] = None
        docs.append(doc)
    return {"validation": docs}


BUILDERS: dict[str, Callable[[int, int], Docs]] = {
    "demo_gqa": gqa_docs,
    "demo_pope": pope_docs,
    "demo_scienceqa_img": scienceqa_docs,
    "demo_textvqa": textvqa_docs,
    "demo_ai2d": ai2d_docs,
    "demo_mme": mme_docs,
    "demo_mmbench_en": mmbench_en_docs,
    "demo_mmbench_cn": mmbench_cn_docs,
    "demo_seedbench": seedbench_docs,
    "demo_mmmu": mmmu_docs,
}
