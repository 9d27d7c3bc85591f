"""One image loader for every command: pictures decode to what a viewer shows, identically in validation,
training, evaluation and chat; unusable ones are quarantined with a reason; paths stay in the image root."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava_more.cli import main
from llava_more.data import images as im
from llava_more.data.llava_json import LlavaJsonDataset, open_image
from llava_more.data.validate import validate_dataset
from llava_more.errors import DataError

H, W = 6, 9  # not square, so a wrong rotation changes the size
RNG = np.random.default_rng(16)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)  # the picture every variant encodes
ALPHA = RNG.integers(0, 256, (H, W), dtype=np.uint8)
GREY = RNG.integers(0, 256, (H, W), dtype=np.uint8)
WHITE = 255


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The reference composite: what a viewer shows of a translucent pixel on a white page."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.round(colour.astype(np.float64) * a + WHITE * (1 - a)).astype(np.uint8)


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _png(values: np.ndarray, color_type: int, bit_depth: int, extra: bytes = b"") -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit colour PNGs)."""
    dtype = ">u2" if bit_depth == 16 else "u1"
    height, width = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(dtype).tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _tRNS(data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + b"tRNS"
        + data
        + struct.pack(">I", zlib.crc32(b"tRNS" + data) & 0xFFFFFFFF)
    )


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _palette_with_transparency(fmt: str) -> tuple[bytes, np.ndarray]:
    palette = [(255, 0, 255), (10, 200, 30), (40, 50, 60), (250, 240, 0)]  # index 0 (magenta) is transparent
    index = RNG.integers(0, len(palette), (H, W), dtype=np.uint8)
    image = Image.fromarray(index).convert("P")
    image.putpalette([c for colour in palette for c in colour])
    expected = np.array(palette, dtype=np.uint8)[index]
    expected[index == 0] = WHITE
    return _save(image, fmt, transparency=0), expected


def _sixteen_bit_grey_with_key() -> tuple[bytes, np.ndarray]:
    values = GREY.astype(np.uint16) * 257
    values[0, :] = 4660  # the colour key: transparent
    expected = _grey_rgb((values >> 8).astype(np.uint8))
    expected[0, :] = WHITE
    return _png(values, 0, 16, _tRNS(struct.pack(">H", 4660))), expected


def _cmyk_tiff() -> tuple[bytes, np.ndarray]:
    cmyk = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    k = cmyk[..., 3:4].astype(np.float64)
    expected = np.round((255 - cmyk[..., :3]) * (255 - k) / 255).astype(
        np.uint8
    )  # the plain CMYK -> RGB formula
    return _save(Image.frombytes("CMYK", (W, H), cmyk.tobytes()), "TIFF"), expected


# name -> (file bytes, suffix, reference RGB pixels, tolerance). Every variant hides the same kind of trap:
# Pillow's plain ``convert("RGB")`` gets it wrong (clipped 16-bit, black or magenta under transparency...).
def _variants() -> dict[str, tuple[bytes, str, np.ndarray, int]]:
    sixteen = GREY.astype(np.uint16) * 256 + RNG.integers(0, 256, (H, W)).astype(np.uint16)  # high byte: GREY
    rgb16 = RGB.astype(np.uint16) * 257
    rgba16 = np.dstack([rgb16, ALPHA.astype(np.uint16) * 257])
    la16 = np.dstack([GREY.astype(np.uint16) * 257, ALPHA.astype(np.uint16) * 257])
    pgm = b"P5\n%d %d\n65535\n" % (W, H) + sixteen.astype(">u2").tobytes()
    rgba = np.dstack([RGB, ALPHA])
    rgb_key = RGB.copy()
    rgb_key[1, :] = (1, 2, 3)
    rgb_key_expected = rgb_key.copy()
    rgb_key_expected[1, :] = WHITE
    palette_png, palette_expected = _palette_with_transparency("PNG")
    palette_gif, gif_expected = _palette_with_transparency("GIF")
    grey16_key, grey16_key_expected = _sixteen_bit_grey_with_key()
    cmyk_tiff, cmyk_expected = _cmyk_tiff()
    cmyk_jpeg = _save(Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=100)
    return {
        "grey16-png": (_png(sixteen, 0, 16), ".png", _grey_rgb((sixteen >> 8).astype(np.uint8)), 0),
        "grey16-tiff": (_save(Image.fromarray(sixteen), "TIFF"), ".tif", _grey_rgb((sixteen >> 8).astype(np.uint8)), 0),
        "grey16-pgm": (pgm, ".pgm", _grey_rgb((sixteen >> 8).astype(np.uint8)), 0),
        "grey16-colour-key": (grey16_key, ".png", grey16_key_expected, 0),
        "rgb16-png": (_png(rgb16, 2, 16), ".png", RGB, 0),
        "rgba16-png": (_png(rgba16, 6, 16), ".png", _over_white(RGB, ALPHA), 1),
        "la16-png": (_png(la16, 4, 16), ".png", _over_white(_grey_rgb(GREY), ALPHA), 1),
        "rgba-png": (_save(Image.fromarray(rgba), "PNG"), ".png", _over_white(RGB, ALPHA), 1),
        "la-png": (_save(Image.fromarray(np.dstack([GREY, ALPHA])), "PNG"), ".png", _over_white(_grey_rgb(GREY), ALPHA), 1),
        "rgba-webp-lossless": (_save(Image.fromarray(rgba), "WEBP", lossless=True, exact=True), ".webp", _over_white(RGB, ALPHA), 1),
        "palette-trns-png": (palette_png, ".png", palette_expected, 0),
        "palette-trns-gif": (palette_gif, ".gif", gif_expected, 0),
        "rgb-colour-key-png": (_save(Image.fromarray(rgb_key), "PNG", transparency=(1, 2, 3)), ".png", rgb_key_expected, 0),
        "cmyk-tiff": (cmyk_tiff, ".tif", cmyk_expected, 1),
        "cmyk-jpeg": (cmyk_jpeg, ".jpg", np.asarray(Image.fromarray(RGB).convert("CMYK").convert("RGB")), 12),
        "bilevel": (_save(Image.fromarray(GREY > 127), "PNG"), ".png", _grey_rgb(np.where(GREY > 127, 255, 0).astype(np.uint8)), 0),
        "plain-rgb": (_save(Image.fromarray(RGB), "PNG"), ".png", RGB, 0),
    }  # fmt: skip


VARIANTS = _variants()

# EXIF orientation -> how the stored pixels relate to the picture (numpy), so that undoing it gives RGB.
STORED_FOR_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


def _with_orientation(picture: np.ndarray, orientation: int, fmt: str) -> bytes:
    stored = np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation](picture))
    image = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    quality = {"JPEG": {"quality": 100, "subsampling": 0}, "WEBP": {"lossless": True}}.get(fmt, {})
    return _save(image, fmt, exif=exif.tobytes(), **quality)


def _write(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def _close(got: np.ndarray, expected: np.ndarray, tolerance: int) -> None:
    assert got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int)).max()
    assert diff <= tolerance, f"max pixel difference {diff} > {tolerance}"


# ---------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_decodes_to_the_reference_pixels(tmp_path, name):
    data, suffix, expected, tolerance = VARIANTS[name]
    path = _write(tmp_path, f"{name}{suffix}", data)
    _close(_pixels(im.load_image(path)), expected, tolerance)
    _close(_pixels(im.load_image_bytes(data)), expected, tolerance)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_is_applied(tmp_path, orientation, fmt):
    path = _write(tmp_path, f"o{orientation}.{fmt.lower()}", _with_orientation(RGB, orientation, fmt))
    with Image.open(path) as raw:
        assert raw.getexif().get(0x0112) == orientation  # the file really carries the tag
    _close(_pixels(im.load_image(path)), RGB, 8 if fmt == "JPEG" else 0)  # a wrong orientation is far off


def test_orientation_and_transparency_together(tmp_path):
    rgba = np.dstack([RGB, ALPHA])
    stored = np.ascontiguousarray(np.rot90(rgba, -1))
    exif = Image.Exif()
    exif[0x0112] = 8
    path = _write(tmp_path, "both.png", _save(Image.fromarray(stored), "PNG", exif=exif.tobytes()))
    _close(_pixels(im.load_image(path)), _over_white(RGB, ALPHA), 1)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: _save(Image.fromarray(RNG.random((H, W)).astype(np.float32)), "TIFF"), im.UNSUPPORTED_IMAGE),
        (lambda: _save(Image.fromarray(RGB), "PNG")[:60], im.CORRUPT_IMAGE),
        (lambda: _save(Image.fromarray(RGB), "JPEG")[:-200], im.CORRUPT_IMAGE),
        (lambda: b"<!DOCTYPE html><html>404</html>", im.NOT_AN_IMAGE),
        (lambda: b"", im.EMPTY_IMAGE),
    ],
    ids=["float", "truncated-png", "truncated-jpeg", "html", "empty"],
)
def test_unusable_images_are_refused_with_their_reason(tmp_path, make, reason):
    path = _write(tmp_path, "bad.img", make())
    with pytest.raises(im.ImageProblem) as err:
        im.load_image(path, subject="image of record 'x'", hint="the fix")
    assert err.value.reason == reason
    message = str(err.value)
    assert (
        message.startswith(f"{path}: image of record 'x' ")
        and message.endswith("; the fix")
        and "\n" not in message
    )


def test_truncated_images_fail_even_when_a_library_relaxed_pillow(tmp_path):
    from PIL import ImageFile

    path = _write(tmp_path, "cut.jpg", _save(Image.fromarray(RGB), "JPEG")[:-200])
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what importing lmms-eval does
    try:
        with pytest.raises(im.ImageProblem, match="cannot be decoded"):
            im.load_image(path)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for the library that set it
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


@pytest.mark.parametrize("pixels", [40 * 40, 100 * 100], ids=["warning-range", "error-range"])
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above 1x, refuses above 2x
    side = int(pixels**0.5)
    path = _write(tmp_path, "bomb.png", _save(Image.new("L", (side, side)), "PNG"))
    with pytest.raises(im.ImageProblem) as err:
        im.load_image(path)
    assert err.value.reason == im.IMAGE_TOO_LARGE and "\n" not in str(err.value)
    with pytest.raises(im.ImageProblem):
        im.as_rgb(Image.new("L", (side, side)))


# ---------------------------------------------------------------------------------------------- one loader
def _dataset(root: Path, names: list[str]) -> Path:
    records = [
        {"id": name, "image": name, "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "this"}]}
        for name in names
    ]  # fmt: skip
    path = root / "data.json"
    path.write_text(json.dumps(records))
    return path


def test_validation_training_evaluation_and_chat_see_the_same_pixels(tmp_path):
    """Every variant passes validation, and the training loader, the chat loader, the lmms-eval plugin's
    path (an image another library opened) and the model's preprocessing all give the reference."""
    from llava_more.eval.chat import load_image as chat_load_image
    from llava_more.model import get_vision
    from llava_more.model.preprocess import pixel_values

    root = tmp_path / "images"
    names = []
    for name, (data, suffix, _, _) in VARIANTS.items():
        names.append(f"{name}{suffix}")
        _write(root, names[-1], data)
    for orientation in (3, 6):
        names.append(f"exif-{orientation}.png")
        _write(root, names[-1], _with_orientation(RGB, orientation, "PNG"))
    json_path = _dataset(tmp_path, names)
    report = validate_dataset(json_path, root, tmp_path / "out" / "q.jsonl", 0.0)
    assert (report.clean, report.bad) == (len(names), 0)

    training = LlavaJsonDataset(report.clean_path, root)
    processor = get_vision("clip-l-336").image_processor("tiny")
    for index, name in enumerate(names):
        reference = _pixels(training[index]["image"])
        key = name.rsplit(".", 1)[0]
        if key in VARIANTS:
            _close(reference, VARIANTS[key][2], VARIANTS[key][3])
        else:
            _close(reference, RGB, 0)
        assert np.array_equal(_pixels(chat_load_image(root / name)), reference)
        with Image.open(root / name) as opened:  # as lmms-eval's datasets hand images over
            assert np.array_equal(_pixels(im.as_rgb(opened)), reference)
            from_opened = pixel_values(processor, [opened], "pad")
        assert np.array_equal(
            from_opened.numpy(), pixel_values(processor, [training[index]["image"]], "pad").numpy()
        )


def test_unusable_images_are_quarantined_and_refused_by_every_loader(tmp_path, monkeypatch):
    from llava_more.eval.chat import load_image as chat_load_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = tmp_path / "images"
    bad = {
        "float.tif": (_save(Image.fromarray(np.zeros((H, W), np.float32)), "TIFF"), im.UNSUPPORTED_IMAGE),
        "bomb.png": (_save(Image.new("L", (100, 100)), "PNG"), im.IMAGE_TOO_LARGE),
        "cut.png": (_save(Image.fromarray(RGB), "PNG")[:70], im.CORRUPT_IMAGE),
    }
    for name, (data, _) in bad.items():
        _write(root, name, data)
    _write(root, "good.png", _save(Image.fromarray(RGB), "PNG"))
    json_path = _dataset(tmp_path, [*bad, "good.png"])
    report = validate_dataset(json_path, root, tmp_path / "q.jsonl", 0.9)
    quarantined = {q["id"]: q for q in map(json.loads, (tmp_path / "q.jsonl").read_text().splitlines())}
    assert {name: q["reason"] for name, q in quarantined.items()} == {n: r for n, (_, r) in bad.items()}
    assert all(str(root / name) in q["detail"] for name, q in quarantined.items())
    assert report.clean == 1
    loader = LlavaJsonDataset(json_path, root)
    for index, name in enumerate(bad):
        with pytest.raises(DataError, match=f"image of record '{name}'"):
            loader[index]
        with pytest.raises(DataError, match="--image"):
            chat_load_image(root / name)


def test_a_decompression_bomb_is_a_one_line_error_in_the_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = tmp_path / "images"
    _write(root, "bomb.png", _save(Image.new("RGB", (60, 60)), "PNG"))
    json_path = _dataset(tmp_path, ["bomb.png"])
    code = main(["validate-data", "--json", str(json_path), "--image-root", str(root), "--quarantine",
                 str(tmp_path / "q.jsonl"), "--max-bad-fraction", "0.5"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and "1 of 1 records are bad" in err
    assert json.loads((tmp_path / "q.jsonl").read_text())["reason"] == im.IMAGE_TOO_LARGE
    # chat refuses the image before it loads any model (the model path does not even exist)
    code = main(
        ["chat", "--model", str(tmp_path / "no-model"), "--image", str(root / "bomb.png"), "--query", "hi"]
    )
    err = capsys.readouterr().err
    assert (
        code == 2 and err.count("\n") == 1 and "too large to decode safely" in err and "Traceback" not in err
    )


# ---------------------------------------------------------------------------------------------- image root
@pytest.fixture
def rooted(tmp_path):
    """An image root with one good image, and images outside it that records try to reach."""
    root = tmp_path / "data" / "images"
    _write(root, "sub/good.png", _save(Image.fromarray(RGB), "PNG"))
    outside = tmp_path / "secret"
    _write(outside, "secret.png", _save(Image.fromarray(RGB), "PNG"))
    (root / "sub" / "link-out.png").symlink_to(outside / "secret.png")
    (root / "dir-out").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "link-in.png").symlink_to(root / "sub" / "good.png")  # stays inside: fine
    return root, outside


def test_image_paths_leaving_the_root_are_quarantined_and_refused(tmp_path, rooted):
    root, outside = rooted
    escaping = [
        str(outside / "secret.png"),  # absolute, outside
        str(root / "sub" / "good.png"),  # absolute, even though it is inside
        "../../secret/secret.png",
        "sub/../../../secret/secret.png",
        "dir-out/../../../secret/secret.png",
        "sub/./../../images/../../secret/secret.png",
    ]
    # Links the dataset's owner placed in the root are its layout (a pre-staged folder linked in).
    kept = [
        "sub/good.png", "sub/link-in.png", "sub/../sub/good.png", "./sub/good.png", "sub/link-out.png",
        "dir-out/secret.png", "sub/./../dir-out/../dir-out/secret.png",
    ]  # fmt: skip
    records = [
        {"id": f"r{i}", "image": path, "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}
        for i, path in enumerate(escaping + kept)
    ]  # fmt: skip
    json_path = tmp_path / "data.json"
    json_path.write_text(json.dumps(records))
    report = validate_dataset(json_path, root, tmp_path / "q.jsonl", 0.9)
    quarantined = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [q["record"]["image"] for q in quarantined] == escaping
    assert {q["reason"] for q in quarantined} == {im.IMAGE_OUTSIDE_ROOT}
    assert all(repr(q["record"]["image"]) in q["detail"] for q in quarantined)
    assert report.clean == len(kept)

    loader = LlavaJsonDataset(json_path, root)
    for index in range(len(escaping)):
        with pytest.raises(DataError, match="image root") as err:
            loader[index]
        assert f"record 'r{index}'" in str(err.value) and "\n" not in str(err.value)
    for index in range(len(escaping), len(records)):
        _close(_pixels(loader[index]["image"]), RGB, 0)


def test_an_image_root_that_is_itself_a_link_is_fine(tmp_path, rooted):
    root, _ = rooted
    linked = tmp_path / "linked-root"
    linked.symlink_to(root, target_is_directory=True)  # how fetch-data links a pre-staged root
    assert im.image_file(linked, "sub/good.png") == linked / "sub" / "good.png"
    with pytest.raises(im.ImageProblem, match="climbs out of the image root"):
        im.image_file(linked, "../images/sub/good.png")


def test_the_loader_refuses_an_escaping_path_even_without_validation(tmp_path, rooted):
    root, outside = rooted
    json_path = _dataset(tmp_path, ["../../secret/secret.png"])
    with pytest.raises(DataError, match="climbs out of the image root"):
        LlavaJsonDataset(json_path, root)[0]
    with pytest.raises(DataError, match="not found"):
        open_image(root / "nope.png", "r1")
    assert os.path.exists(outside / "secret.png")


def test_training_on_a_bad_image_ends_with_one_line(tmp_path, monkeypatch, capsys):
    """A bomb (or any unusable image) met in training, even inside a DataLoader worker process, is a
    one-line error with exit 2 naming the file and the record."""
    from tests.test_train_helpers import make_bundle, make_dataset

    init = make_bundle(tmp_path / "init")
    data = make_dataset(tmp_path / "data", n_images=4)
    (tmp_path / "data" / "images" / "2.png").write_bytes(_save(Image.new("L", (3000, 3000)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # inherited by the forked worker
    argv = ["train", "--stage", "2", "--init", str(init), "--data", str(data), "--image-root", str(tmp_path / "data"),
            "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), "--protocol", "ci",
            "--max-steps", "1", "--num-workers", "1"]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and "Traceback" not in err[-1]
    assert "2.png" in err[-1] and "record 'img2'" in err[-1] and "too large to decode safely" in err[-1]
    assert not (tmp_path / "out").exists()
