"""No command writes over its own inputs or makes two outputs collide, and outputs appear only when complete:
the checks of ``llava_more.outputs`` and the commands that use them, run through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

from llava_more.cli import main
from llava_more.outputs import (
    OUTPUT_MARKER,
    OutputPathError,
    atomic_dir,
    atomic_file,
    check_outputs,
    write_text_atomic,
)


def _digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) and a hash of its bytes; links as their target."""
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*"))
    out = {}
    for path in paths:
        key = str(path)
        if path.is_symlink():
            out[key] = "link:" + os.readlink(path)
        elif path.is_file():
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _one_line_error(capsys, argv: list[str], *expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(text in err for text in expected), err
    return err


# ---------------------------------------------------------------------------------------------- the check
@pytest.fixture
def files(tmp_path):
    (tmp_path / "in").mkdir()
    data = tmp_path / "in" / "data.json"
    data.write_text("[]")
    (tmp_path / "out").mkdir()
    return tmp_path, data


def _aliases(tmp_path: Path, data: Path) -> dict[str, Path]:
    """Other spellings of ``data``: each one is the same file."""
    link = tmp_path / "out" / "link.json"
    link.symlink_to(data)
    hard = tmp_path / "out" / "hard.json"
    os.link(data, hard)
    folder_link = tmp_path / "alias-dir"
    folder_link.symlink_to(data.parent, target_is_directory=True)
    return {
        "same": data,
        "relative-dotdot": Path(os.path.relpath(tmp_path / "out" / ".." / "in" / "data.json")),
        "dotdot": tmp_path / "out" / ".." / "in" / "./data.json",
        "symlink": link,
        "hard-link": hard,
        "through-linked-folder": folder_link / "data.json",
        "case": tmp_path / "in" / "DATA.json",
        "trailing-slash-folder": Path(str(data.parent) + "/"),
    }


@pytest.mark.parametrize(
    "alias", ["same", "relative-dotdot", "dotdot", "symlink", "hard-link", "through-linked-folder", "case"]
)
def test_an_output_that_is_an_input_under_another_name_is_refused(files, alias):
    tmp_path, data = files
    path = _aliases(tmp_path, data)[alias]
    with pytest.raises(OutputPathError, match="would overwrite the input") as err:
        check_outputs({"--json": data}, {"--quarantine": path})
    assert "--quarantine" in str(err.value) and "--json" in str(err.value)


def test_an_output_folder_holding_an_input_is_refused(files):
    tmp_path, data = files
    for folder in (data.parent, tmp_path, _aliases(tmp_path, data)["trailing-slash-folder"]):
        with pytest.raises(OutputPathError, match="holds the input"):
            check_outputs({"--texts": [tmp_path / "x.json", data]}, {"--out": folder})


def test_outputs_that_collide_are_refused(files):
    tmp_path, _ = files
    out = tmp_path / "out"
    (out / "r.json").write_text("{}")
    cases = [
        {"--quarantine": out / "q.jsonl", "--report": out / "sub" / ".." / "q.jsonl"},
        {"--quarantine": out / "q.jsonl", "--report": out / "Q.jsonl"},  # the same file on macOS / Windows
        {"--clean-out": out / "r.json", "--report": out / "linked.json"},
        {"--out": out / "tables", "--plots": out / "tables" / "plots"},
        {"--out": out / "tables", "--plots": out / "tables"},
    ]
    (out / "linked.json").symlink_to(out / "r.json")
    for outputs in cases:
        with pytest.raises(OutputPathError, match="same path|inside the output folder"):
            check_outputs({}, outputs)


def test_distinct_paths_pass(files):
    tmp_path, data = files
    check_outputs(
        {"--json": data, "--image-root": data.parent, "--model": "org/hub-id", "--none": None},
        {"--quarantine": data.parent / "quarantine.jsonl", "--clean-out": tmp_path / "out" / "clean.json",
         "--report": None, "--out": "-"},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- atomic writes
def test_a_failed_write_leaves_the_earlier_file_and_no_temporary(tmp_path):
    path = tmp_path / "scores.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write("half of the new conte")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_an_atomic_write_replaces_a_link_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    out = tmp_path / "out.json"
    out.symlink_to(victim)
    write_text_atomic(out, "new")
    assert victim.read_text() == "precious" and not out.is_symlink() and out.read_text() == "new"


def test_a_failed_folder_leaves_the_earlier_folder(tmp_path):
    out = tmp_path / "bundle"
    with atomic_dir(out) as staging:
        (staging / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(out) as staging:
        (staging / "weights").write_text("v2, half")
        raise RuntimeError("killed")
    assert (out / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with atomic_dir(out) as staging:  # an earlier output (it has the marker) is replaced
        (staging / "weights").write_text("v2")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "weights"]


def test_a_folder_of_other_files_is_never_replaced(tmp_path, monkeypatch):
    mine = tmp_path / "my-project"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "todo.txt").write_text("keep me")
    before = _digest(mine)
    with pytest.raises(OutputPathError, match="did not write"), atomic_dir(mine) as staging:
        (staging / "x").write_text("never")
    assert _digest(mine) == before
    monkeypatch.chdir(mine)
    for folder in (Path("."), Path("..")):
        with pytest.raises(OutputPathError, match="current, a parent"), atomic_dir(folder):
            pass


# ---------------------------------------------------------------------------------------------- validate-data
@pytest.fixture
def dataset(tmp_path):
    """A small LLaVA dataset (three images, one broken) and the arguments that validate it."""
    root = tmp_path / "data" / "images"
    root.mkdir(parents=True)
    records = []
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / f"{i}.png")
        records.append({"id": f"r{i}", "image": f"{i}.png",
                        "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]})  # fmt: skip
    (root / "2.png").write_bytes(b"broken")
    data = tmp_path / "data" / "data.json"
    data.write_text(json.dumps(records))
    args = ["validate-data", "--json", str(data), "--image-root", str(root), "--max-bad-fraction", "0.5"]
    return tmp_path, data, root, args


def _outputs(tmp_path: Path) -> dict[str, str]:
    out = tmp_path / "out"
    return {
        "--quarantine": str(out / "q.jsonl"),
        "--clean-out": str(out / "clean.json"),
        "--report": str(out / "report.json"),
    }


def _argv(args: list[str], outputs: dict[str, str]) -> list[str]:
    return [*args, *(item for pair in outputs.items() for item in pair)]


@pytest.mark.parametrize("flag", ["--quarantine", "--clean-out", "--report"])
@pytest.mark.parametrize("alias", ["same", "dotdot", "symlink", "hard-link", "case"])
def test_validate_data_refuses_an_output_aliasing_its_input(capsys, dataset, flag, alias):
    tmp_path, data, root, args = dataset
    (tmp_path / "out").mkdir()
    path = {
        "same": data,
        "dotdot": root / ".." / "data.json",
        "case": data.with_name("Data.json"),
    }.get(alias)
    if alias == "symlink":
        path = tmp_path / "out" / "alias.json"
        path.symlink_to(data)
    elif alias == "hard-link":
        path = tmp_path / "out" / "alias.json"
        os.link(data, path)
    before = _digest(tmp_path / "data")
    outputs = {**_outputs(tmp_path), flag: str(path)}
    _one_line_error(capsys, _argv(args, outputs), flag, "--json", "would overwrite the input")
    assert _digest(tmp_path / "data") == before
    assert not any(Path(p).exists() for f, p in outputs.items() if f != flag)


@pytest.mark.parametrize(
    "pair", [("--quarantine", "--report"), ("--quarantine", "--clean-out"), ("--clean-out", "--report")]
)
def test_validate_data_refuses_two_outputs_that_are_one_file(capsys, dataset, pair):
    tmp_path, data, _, args = dataset
    outputs = _outputs(tmp_path)
    outputs[pair[1]] = outputs[pair[0]]
    _one_line_error(capsys, _argv(args, outputs), *pair, "same path")
    assert not (tmp_path / "out").exists()


def test_validate_data_refuses_an_output_that_is_one_of_the_images(capsys, dataset):
    tmp_path, data, root, args = dataset
    before = _digest(tmp_path / "data")
    image_alias = tmp_path / "elsewhere.png"
    os.link(root / "1.png", image_alias)
    for target in (root / "0.png", image_alias):
        outputs = {**_outputs(tmp_path), "--report": str(target)}
        _one_line_error(capsys, _argv(args, outputs), "--report", "image")
        assert _digest(tmp_path / "data") == before


def test_validate_data_failing_midway_keeps_the_earlier_outputs(capsys, dataset):
    tmp_path, data, root, args = dataset
    outputs = _outputs(tmp_path)
    assert main(_argv(args, outputs)) == 0
    capsys.readouterr()
    earlier = {flag: Path(path).read_bytes() for flag, path in outputs.items()}
    # Break a second image: 2 of 3 bad is over the 0.5 allowed, so this run fails.
    (root / "1.png").write_bytes(b"")
    before = _digest(tmp_path / "data")
    _one_line_error(capsys, _argv(args, outputs), "2 of 3 records are bad", outputs["--quarantine"])
    assert _digest(tmp_path / "data") == before
    assert Path(outputs["--clean-out"]).read_bytes() == earlier["--clean-out"]
    assert Path(outputs["--report"]).read_bytes() == earlier["--report"]
    # The quarantine is the evidence the message points at: it is the one file a rejected run writes.
    assert len(Path(outputs["--quarantine"]).read_text().splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clean.json", "q.jsonl", "report.json"]


# ---------------------------------------------------------------------------------------------- other commands
def test_make_tokenizer_refuses_to_write_over_its_corpus(capsys, dataset):
    tmp_path, data, _, _ = dataset
    before = _digest(tmp_path / "data")
    for out in (data, data.parent, tmp_path):
        _one_line_error(capsys, ["make-tokenizer", "--texts", str(data), "--out", str(out), "--vocab-size", "300"],
                        "--out", "--texts")  # fmt: skip
    assert _digest(tmp_path / "data") == before


def test_make_demo_data_keeps_an_earlier_dataset_when_it_fails(capsys, tmp_path, monkeypatch):
    out = tmp_path / "lcs"
    argv = ["make-demo-data", "pretrain", "--kind", "lcs", "--size", "4", "--seed", "0", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    before = _digest(out)

    from llava_more.data import demo_world

    calls = {"n": 0}
    real = demo_world.render_scene

    def render_then_fail(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")  # a crash half-way through the images
        return real(*a, **k)

    monkeypatch.setattr(demo_world, "render_scene", render_then_fail)
    with pytest.raises(OSError):
        main([*argv[:-4], "--seed", "1", "--out", str(out)])
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcs"]  # no staging folder left behind


def test_make_demo_data_never_replaces_a_folder_of_other_files(capsys, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    argv = ["make-demo-data", "instruct", "--size", "3", "--seed", "0", "--out", str(out)]
    _one_line_error(capsys, argv, "did not write", "thesis.tex")
    assert (out / "thesis.tex").read_text() == "years of work" and len(list(out.iterdir())) == 1


def test_dvc_yaml_refuses_to_write_over_params(capsys, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("study: none\n")
    _one_line_error(capsys, ["dvc-yaml", "--params", str(params), "--out", str(tmp_path / "." / "params.yaml")],
                    "--out", "--params")  # fmt: skip
    assert params.read_text() == "study: none\n"


@pytest.mark.parametrize(
    "argv, flags",
    [
        (["train", "--stage", "1", "--init", "{b}", "--data", "{d}", "--image-root", "{r}", "--out", "{b}",
          "--work-dir", "{w}", "--protocol", "ci"], ("--out", "--init")),
        (["train", "--stage", "1", "--init", "{b}", "--data", "{d}", "--image-root", "{r}", "--out", "{o}",
          "--work-dir", "{b}/..", "--protocol", "ci"], ("--work-dir", "--init")),
        (["train", "--stage", "1", "--init", "{b}", "--data", "{d}", "--image-root", "{r}", "--out", "{o}",
          "--work-dir", "{o}/work", "--protocol", "ci"], ("--work-dir", "--out")),
        (["init-model", "--llm", "llama3.1-8b", "--vision", "clip-l-336", "--size", "tiny", "--tokenizer", "{b}",
          "--out", "{b}"], ("--out", "--tokenizer")),
        (["evaluate", "--model", "{b}", "--tasks", "demo_pope", "--out", "{b}"], ("--out", "--model")),
        (["evaluate", "--model", "{b}", "--tasks", "demo_pope", "--out", "{b}/.."], ("--out", "--model")),
        (["report", "--scores-dir", "{w}", "--out", "{w}", "--plots", "{o}"], ("--out", "--scores-dir")),
        (["report", "--scores-dir", "{w}", "--out", "{o}", "--plots", "{o}"], ("--out", "--plots")),
        (["recaption", "--model", "{b}", "--json", "{d}", "--image-root", "{r}", "--out", "{r}/.."],
         ("--out", "--json")),
    ],
    ids=["train-out-is-init", "train-work-holds-init", "train-work-in-out", "init-model-over-tokenizer",
         "evaluate-over-model", "evaluate-holding-model", "report-over-scores", "report-tables-are-plots",
         "recaption-holding-its-json"],
)  # fmt: skip
def test_commands_refuse_outputs_that_are_or_hold_their_inputs(capsys, tmp_path, argv, flags):
    bundle = tmp_path / "runs" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "llava_more.json").write_text("{}")
    data = tmp_path / "data" / "clean.json"
    data.parent.mkdir()
    data.write_text("[]")
    (tmp_path / "data" / "images").mkdir()
    (tmp_path / "work").mkdir()
    before = _digest(tmp_path)
    names = {
        "b": bundle,
        "d": data,
        "r": tmp_path / "data" / "images",
        "w": tmp_path / "work",
        "o": tmp_path / "new",
    }
    argv = [arg.format(**names) for arg in argv]
    _one_line_error(capsys, argv, *flags)
    assert _digest(tmp_path) == before
    assert not (tmp_path / "new").exists()


def test_fetch_data_refuses_to_write_over_its_prestaged_copy(capsys, tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "blip_laion_cc_sbu_558k.json").write_text("[]")
    (staged / "images").mkdir()
    settings = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    settings["pretrain_data"]["lcs"]["local_path"] = "staged"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(settings, sort_keys=False))
    before = _digest(tmp_path)
    for out in (staged, staged / "images" / "..", tmp_path):
        _one_line_error(capsys, ["fetch-data", "--params", str(params), "--name", "lcs", "--kind", "pretrain",
                                 "--out", str(out)], "--out")  # fmt: skip
    assert _digest(tmp_path) == before
