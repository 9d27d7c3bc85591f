"""Images as the RGB picture a viewer shows: the one place llava-more opens, checks and converts them.

Validation, training, evaluation (the lmms-eval plugin), chat and recaptioning all go through this
module, so an image that passes validation is decoded to the same pixels everywhere after it.

- ``image_file(root, relpath)``: where a record's image lies; an absolute path or a ``..`` that climbs
  out is refused (``IMAGE_OUTSIDE_ROOT``). Links inside the root are the dataset's own layout (HPC
  sites link pre-staged COCO, GQA or VG folders into one LLaVA-665K image root) and are followed: a
  record's text can name a path, never create a link, and extracted archives hold no links.
- ``load_image(path)``: opens and fully decodes a file (truncated files fail even where a library,
  lmms-eval for one, relaxed Pillow globally) and returns ``to_rgb`` of it.
- ``to_rgb(image)``: the conversion itself, also applied to images that arrive already opened (the
  lmms-eval plugin's): the EXIF orientation is applied (``ImageOps.exif_transpose``); 16-bit
  greyscale (``I;16*``, and ``I`` within 16 bits) keeps its high byte, as Pillow itself reads 16-bit
  colour PNGs; transparency (RGBA, LA, PA, palette or colour-key transparency) is composited onto
  white; CMYK goes through its embedded ICC profile when it has one (littleCMS), else Pillow's
  conversion (which undoes Adobe's inverted CMYK JPEGs); other modes Pillow converts are converted;
  32-bit float and wider integer images are refused (``UNSUPPORTED_IMAGE``).
- Decompression bombs: past ``PIL.Image.MAX_IMAGE_PIXELS`` Pillow only warns; llava-more turns that
  warning into an error for the whole process, so such an image is refused (``IMAGE_TOO_LARGE``).

Every failure is an ``ImageProblem`` (a ``DataError``) carrying a reason code (validation writes it
to the quarantine) and a one-line message naming the file and the fix.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from llava_more.errors import DataError

logger = logging.getLogger(__name__)

# Reason codes (validation's quarantine file uses them).
BAD_IMAGE_FIELD = "bad_image_field"
IMAGE_OUTSIDE_ROOT = "image_outside_root"
MISSING_IMAGE = "missing_image"
EMPTY_IMAGE = "empty_image"
NOT_AN_IMAGE = "not_an_image"
CORRUPT_IMAGE = "corrupt_image"
UNSUPPORTED_IMAGE = "unsupported_image"
IMAGE_TOO_LARGE = "image_too_large"

# What a viewer shows behind transparent pixels (a page, a document): white.
BACKGROUND = (255, 255, 255)
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


class ImageProblem(DataError):
    """An image that cannot be used: ``reason`` is the quarantine code, ``detail`` says what is wrong.

    Made with ``ImageProblem.of``; the plain constructor takes just the message, as for any exception
    (torch re-raises a DataLoader worker's error that way).
    """

    reason: str = CORRUPT_IMAGE
    path: object = None
    detail: str = ""

    @classmethod
    def of(cls, reason: str, path: object, detail: str, hint: str = "", subject: str = "") -> ImageProblem:
        """``<path>: <subject> <detail>; <hint>``, on one line."""
        detail = " ".join(detail.split())
        text = f"{path}: {subject} {detail}" if subject else f"{path}: {detail}"
        problem = cls(text + (f"; {hint}" if hint else ""))
        problem.reason, problem.path, problem.detail = reason, path, detail
        return problem

    def about(self, path: object, subject: str = "", hint: str = "") -> ImageProblem:
        """The same problem, told about ``path`` (with the caller's subject and hint)."""
        return ImageProblem.of(self.reason, path, self.detail, hint, subject)

    def __reduce__(self):  # pickled whole (message and reason) across processes
        return _rebuild_problem, (str(self), self.reason, self.path, self.detail)


def _rebuild_problem(message: str, reason: str, path: object, detail: str) -> ImageProblem:
    problem = ImageProblem(message)
    problem.reason, problem.path, problem.detail = reason, path, detail
    return problem


# ---------------------------------------------------------------------------------------------- paths
def image_file(image_root: str | os.PathLike, relpath: object) -> Path:
    """The file a record's ``image`` field names under ``image_root``; refuse paths that leave the root."""
    if not isinstance(relpath, str) or not relpath.strip() or "\x00" in relpath:
        raise ImageProblem.of(
            BAD_IMAGE_FIELD, relpath, "'image' must be one relative path (a non-empty string)"
        )
    root = os.fspath(image_root)
    if os.path.isabs(relpath):
        raise ImageProblem.of(
            IMAGE_OUTSIDE_ROOT,
            relpath,
            f"is an absolute path; image paths must be relative to the image root {root}",
        )
    lexical = os.path.normpath(relpath)
    if lexical == os.pardir or lexical.startswith(os.pardir + os.sep):
        raise ImageProblem.of(IMAGE_OUTSIDE_ROOT, relpath, f"climbs out of the image root {root} with '..'")
    # The path that was checked is the one opened: a '..' after a linked folder must not climb
    # from the link's target.
    return Path(root) / lexical


# ---------------------------------------------------------------------------------------------- decoding
_strict_lock = threading.Lock()
_strict_users = 0
_relaxed_before = False


@contextmanager
def strict_decoding() -> Iterator[None]:
    """Truncated images fail inside this block even if a library set ``ImageFile.LOAD_TRUNCATED_IMAGES``.

    Counted, so that threads decoding at the same time restore the setting only when the last leaves.
    """
    global _strict_users, _relaxed_before
    with _strict_lock:
        if _strict_users == 0:
            _relaxed_before = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _strict_users += 1
    try:
        yield
    finally:
        with _strict_lock:
            _strict_users -= 1
            if _strict_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _relaxed_before


def _label(image: Image.Image) -> str:
    return getattr(image, "filename", "") or "image"


def _sixteen_bit_to_8(image: Image.Image) -> Image.Image:
    """16-bit greyscale as 8-bit ``L`` (or ``LA`` with its colour-key transparency): the high byte."""
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 0xFFFF):
        raise ImageProblem.of(
            UNSUPPORTED_IMAGE,
            _label(image),
            f"is a {image.mode} image with values outside 16 bits ({values.min()}..{values.max()}); "
            "save it as an 8- or 16-bit PNG",
        )
    grey = Image.fromarray((values >> 8).astype(np.uint8), "L")
    key = image.info.get("transparency")
    if isinstance(key, int):
        alpha = Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8), "L")
        grey = Image.merge("LA", (grey, alpha))
    return grey


def _from_cmyk(image: Image.Image) -> Image.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the plain conversion, as viewers do
    return image.convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as the 8-bit RGB picture a viewer shows (see the module docstring for each case).

    An RGB image with nothing to undo comes back as it is; anything else is a new image.
    """
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            image = ImageOps.exif_transpose(image)  # a transposed copy without the orientation tag
    except Exception as err:  # noqa: BLE001 (unreadable EXIF: show the picture as stored, as viewers do)
        logger.warning("%s: EXIF orientation unreadable (%s); using the image as stored", _label(image), err)
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        image = _sixteen_bit_to_8(image)
    elif image.mode == "CMYK":
        return _from_cmyk(image)
    elif image.mode == "F" or image.mode.startswith(("I;32", "F;")):
        raise ImageProblem.of(
            UNSUPPORTED_IMAGE,
            _label(image),
            f"is a {image.mode} (floating-point or 32-bit) image with no standard display range; "
            "save it as an 8- or 16-bit PNG",
        )
    try:
        if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as err:
        raise ImageProblem.of(
            UNSUPPORTED_IMAGE,
            _label(image),
            f"is a {image.mode} image Pillow cannot convert to RGB ({err}); save it as PNG or JPEG",
        ) from None


def _html_hint(head: bytes) -> str:
    head = head.lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return " (it looks like an HTML page, e.g. an error page saved by a downloader)"
    return ""


def _check_pixels(image: Image.Image) -> None:
    """Pillow's own limit, enforced even where a library silenced its warning."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        raise Image.DecompressionBombError(
            f"{image.width}x{image.height} = {image.width * image.height} pixels, over the {limit} of "
            "PIL.Image.MAX_IMAGE_PIXELS"
        )


@contextmanager
def _problems(
    label: object, subject: str, hint: str, head: Callable[[], bytes] = lambda: b""
) -> Iterator[None]:
    """Turn whatever decoding raises into an ``ImageProblem`` about ``label`` (with ``subject`` and ``hint``)."""
    try:
        yield
    except ImageProblem as problem:
        raise problem.about(label, subject, hint) from None
    except UnidentifiedImageError:
        detail = f"is not an image Pillow can identify{_html_hint(head())}"
        raise ImageProblem.of(NOT_AN_IMAGE, label, detail, hint, subject) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageProblem.of(
            IMAGE_TOO_LARGE, label, f"is too large to decode safely ({err})", hint, subject
        ) from None
    except Exception as err:  # noqa: BLE001 (untrusted bytes: any decoder failure means the image is unusable)
        detail = f"cannot be decoded completely ({type(err).__name__}: {err})"
        raise ImageProblem.of(CORRUPT_IMAGE, label, detail, hint, subject) from None


def _decode(source: str | IO[bytes]) -> Image.Image:
    with strict_decoding():
        image = Image.open(source)
        try:
            _check_pixels(image)
            image.load()
            rgb = to_rgb(image)
        except BaseException:
            image.close()
            raise
    if rgb is image and getattr(image, "fp", None) is None:
        return image  # decoded, and Pillow closed its file after loading: nothing to copy or close
    if rgb is image:  # a multi-frame file stays open: keep a copy, close the file
        rgb = image.copy()
    image.close()
    return rgb


def load_image(path: str | os.PathLike, *, subject: str = "", hint: str = "") -> Image.Image:
    """The image file at ``path``, fully decoded, as ``to_rgb`` gives it; ``ImageProblem`` otherwise.

    Messages read ``<path>: <subject> <what is wrong>; <hint>``: ``subject`` says whose image it is
    (``"image of record 'r7'"``), ``hint`` is the fix for the caller's users.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageProblem.of(MISSING_IMAGE, path, "not found", hint, subject) from None
    except OSError as err:
        raise ImageProblem.of(
            MISSING_IMAGE, path, f"cannot be read ({err.strerror})", hint, subject
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ImageProblem.of(MISSING_IMAGE, path, "is not a file", hint, subject)
    if info.st_size == 0:
        raise ImageProblem.of(EMPTY_IMAGE, path, "is empty (0 bytes)", hint, subject)

    def head() -> bytes:
        with path.open("rb") as handle:
            return handle.read(64)

    with _problems(path, subject, hint, head):
        return _decode(str(path))


def load_image_bytes(
    data: bytes, label: object = "image", *, subject: str = "", hint: str = ""
) -> Image.Image:
    """``load_image`` for an image held in memory (a downloaded file, a shard member)."""
    if not data:
        raise ImageProblem.of(EMPTY_IMAGE, label, "is empty (0 bytes)", hint, subject)
    with _problems(label, subject, hint, lambda: data[:64]):
        return _decode(io.BytesIO(data))


def as_rgb(image: Image.Image, label: object = "image", *, subject: str = "", hint: str = "") -> Image.Image:
    """``to_rgb`` for an image another library opened (the lmms-eval plugin's); failures are ``ImageProblem``."""
    with _problems(label, subject, hint), strict_decoding():
        _check_pixels(image)
        image.load()
        return to_rgb(image)
