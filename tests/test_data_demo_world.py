"""The demo world: scenes obey their invariants, renders show what the scene says, facts are right."""

from __future__ import annotations

import random

import pytest

from llava_more.data import demo_questions as questions
from llava_more.data import demo_world as world
from llava_more.data.demo_world import Scene, Shape


def _scenes(n: int = 300, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [world.random_scene(rng) for _ in range(n)]


def test_scenes_keep_their_invariants():
    scenes = _scenes()
    for scene in scenes:
        kinds = [s.kind for s in scene.shapes]
        colors = [s.color for s in scene.shapes]
        cells = [(s.row, s.col) for s in scene.shapes]
        assert 1 <= len(scene.shapes) <= 3
        assert (
            len(set(kinds)) == len(kinds)
            and len(set(colors)) == len(colors)
            and len(set(cells)) == len(cells)
        )
        assert [s.size for s in scene.shapes] == ["big"] + ["small"] * (len(scene.shapes) - 1)
        if scene.word:
            assert scene.word in world.WORDS
            assert all(s.row < 2 for s in scene.shapes), "the bottom row is the word's"
    # Every count, kind, colour and word occurs: the generator covers the world.
    assert {len(s.shapes) for s in scenes} == {1, 2, 3}
    assert {sh.kind for s in scenes for sh in s.shapes} == set(world.SHAPES)
    assert {sh.color for s in scenes for sh in s.shapes} == set(world.COLORS)
    assert {s.word for s in scenes} == {None, *world.WORDS}
    assert 0.25 < sum(s.word is not None for s in scenes) / len(scenes) < 0.45


def test_same_rng_seed_gives_the_same_scene_and_identical_pixels():
    a = world.random_scene(random.Random("x"))
    b = world.random_scene(random.Random("x"))
    assert a == b
    assert world.render_scene(a).tobytes() == world.render_scene(b).tobytes()
    assert Scene.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("size", [96, 48])
def test_render_paints_each_shape_in_its_cell_with_its_colour(size):
    for scene in _scenes(60, seed=size):
        image = world.render_scene(scene, size)
        assert image.mode == "RGB" and image.size == (size, size)
        cell = size / 3
        occupied = {(s.row, s.col) for s in scene.shapes}
        for shape in scene.shapes:
            # Slightly below the centre: inside circles, squares and triangles alike.
            x, y = int((shape.col + 0.5) * cell), int((shape.row + 0.6) * cell)
            assert image.getpixel((x, y)) == world.COLORS[shape.color], shape
        for row in range(2 if scene.word else 3):
            for col in range(3):
                if (row, col) not in occupied:
                    x, y = int((col + 0.5) * cell), int((row + 0.5) * cell)
                    assert image.getpixel((x, y)) == world.BACKGROUNDS[scene.background]


def test_word_is_printed_in_the_bottom_band_only_when_present():
    base = Scene(shapes=(Shape("circle", "red", 0, 0, "big"),), background="white")
    with_word = Scene(shapes=base.shapes, background="white", word="zoo")
    plain, printed = world.render_scene(base), world.render_scene(with_word)
    ink = world.word_ink(with_word)
    bottom = [printed.getpixel((x, y)) for x in range(96) for y in range(64, 96)]
    assert bottom.count(ink) > 200  # large letters, not a speck
    assert all(plain.getpixel((x, y)) == world.BACKGROUNDS["white"] for x in range(96) for y in range(64, 96))
    # Different words give different pixels (the word is readable in principle).
    renders = {world.render_scene(Scene(base.shapes, "white", w)).tobytes() for w in world.WORDS}
    assert len(renders) == len(world.WORDS)


def test_fact_helpers():
    scene = Scene(
        shapes=(
            Shape("square", "blue", 1, 1, "big"),
            Shape("circle", "red", 0, 0, "small"),
            Shape("triangle", "green", 1, 0, "small"),
        ),
        background="black",
    )
    assert world.count_shapes(scene) == 3
    assert world.main_shape(scene).name == "blue square"
    assert world.color_of(scene, "circle") == "red" and world.color_of(scene, "hexagon") is None
    assert world.has_object(scene, kind="circle", color="red")
    assert not world.has_object(scene, kind="circle", color="blue")
    assert world.leftmost(scene) is None  # two shapes share the left column
    assert world.rightmost(scene).kind == "square"
    assert world.topmost(scene).kind == "circle"
    assert world.relation(scene.shapes[1], scene.shapes[0]) == "left"
    assert ("blue", "circle") in world.absent_objects(scene)
    assert ("red", "circle") not in world.absent_objects(scene)
    assert world.absent_kinds(scene) == []
    assert scene.shapes[1].position == "top left" and scene.shapes[0].position == "center"
    assert world.with_article("orange square") == "an orange square"


def test_questions_are_true_of_the_scene():
    rng = random.Random(5)
    for scene in _scenes(200, seed=9):
        qa = questions.existence_question(scene, rng)
        phrase = qa.question.removeprefix("Is there ").removesuffix(" in the image?").split(" ", 1)[1]
        words = phrase.split()
        color = next((w for w in words if w in world.COLORS), None)
        kind = next((w for w in words if w in world.SHAPES), None)
        assert qa.answer == ("yes" if world.has_object(scene, kind=kind, color=color) else "no"), qa

        choice = questions.multiple_choice_question(scene, rng)
        picked = choice.choices[ord(choice.answer) - ord("A")]
        main = world.main_shape(scene)
        assert picked in (main.color, main.kind, str(len(scene.shapes)))
        assert len(set(choice.choices)) == len(choice.choices)

        for question, answer in questions.short_answer_candidates(scene):
            subject = question.removeprefix("What color is the ").removesuffix("?")
            if subject in world.SHAPES:
                assert answer == world.color_of(scene, subject)
            elif subject == "background":
                assert answer == scene.background
            if question == "How many shapes are there?":
                assert answer == str(len(scene.shapes))
        if scene.word:
            word = questions.word_question(scene, rng)
            assert word.answer == scene.word and scene.word in word.ocr_tokens
            text = questions.prompt_text(word)
            assert "\nReference OCR token: " in text and text.endswith(questions.SHORT_ANSWER_PROMPT)


def test_existence_questions_are_balanced():
    rng = random.Random(1)
    answers = [questions.existence_question(s, rng).answer for s in _scenes(400, seed=2)]
    assert 0.4 < answers.count("yes") / len(answers) < 0.6


def test_prompt_text_matches_lmms_eval_formats():
    mc = questions.QA(questions.CHOICE, "What color is the circle?", "B", choices=("red", "blue"))
    assert questions.prompt_text(mc) == (
        "What color is the circle?\nA. red\nB. blue\nAnswer with the option's letter from the given choices directly."
    )
    word = questions.QA(
        questions.WORD, "what word is written in the image?", "cat", ocr_tokens=("sun", "cat")
    )
    assert questions.prompt_text(word) == (
        "What word is written in the image?\nReference OCR token: sun, cat\n"
        "Answer the question using a single word or phrase."
    )
