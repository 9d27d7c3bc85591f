"""Dense re-captioning of an image set with a multimodal model (how Recap-DataComp was made).

The captioner is one of our trained bundles or any Hugging Face image-text-to-text model, prompted
through ``llava_more.model.inference`` as chat and evaluation prompt them (a bundle: its own chat
template, image-token count and image preparation; another model: its processor and chat template).
Decoding is greedy and batched with left padding: a batch captions as one image at a time does.

Resumable: each finished batch is appended to ``captions.jsonl`` (flushed and synced) and a rerun
skips the ids already there, so a killed job loses at most one batch. The result is a Recap-style
LLaVA JSON (``data.json``: the image and its new caption) beside ``images/``, a link to the
image root, in the common layout.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from llava_more.data.download.layout import (
    IMAGES_DIR,
    caption_record,
    finish_layout,
    link_path,
    reset_outputs,
)
from llava_more.data.llava_json import image_path, open_image, read_records
from llava_more.errors import DataError, UserError
from llava_more.model.inference import BundlePrompter, ProcessorPrompter, Prompter, is_bundle

logger = logging.getLogger(__name__)

# The prompt Recap-DataComp-1B used with its LLaVA-1.5-LLaMA3-8B captioner.
DEFAULT_PROMPT = "Please generate a detailed caption of this image. Please be as descriptive as possible."
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_NEW_TOKENS = 128
DONE_FILE = "captions.jsonl"


class Captioner(Protocol):
    name: str

    def caption(self, images: Sequence[Image.Image], prompt: str, max_new_tokens: int) -> list[str]: ...


class Captioning(Prompter):
    """A prompter that captions: one user turn, ``prompt`` after the image slot."""

    def caption(self, images: Sequence[Image.Image], prompt: str, max_new_tokens: int) -> list[str]:
        # The image slot is the template's; the prompt's own text stays text.
        one = self.prompt([{"role": "user", "content": prompt}], images=1)
        return self.answer([one] * len(images), images, max_new_tokens=max_new_tokens)


class BundleCaptioner(Captioning, BundlePrompter):
    """One of our bundles (named in the manifest by its folder's name)."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = None):
        super().__init__(path, device, dtype)
        self.name = self.path.name

    def _prompt_ids(self, prompt: str) -> list[int]:
        return self.prompt([{"role": "user", "content": prompt}], images=1).input_ids


class HubCaptioner(Captioning, ProcessorPrompter):
    """A Hugging Face image-text-to-text model (a Hub id or a local folder)."""


def load_captioner(
    model: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = None
) -> Captioner:
    """A bundle when ``model`` is a folder with ``llava_more.json``, else a Hugging Face model."""
    kind = BundleCaptioner if is_bundle(model) else HubCaptioner
    return kind(str(model), device, dtype)


def read_done(done_path: Path) -> dict[str, str]:
    """Captions already written; a line cut by a crash (the last one) is ignored and redone."""
    done: dict[str, str] = {}
    if not done_path.is_file():
        return done
    with open(done_path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
                done[str(entry["id"])] = entry["caption"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return done


def _trim_partial_line(done_path: Path) -> None:
    """Drop a trailing line without its newline, so appended lines start on a line of their own."""
    if not done_path.is_file():
        return
    data = done_path.read_bytes()
    if data and not data.endswith(b"\n"):
        done_path.write_bytes(data[: data.rfind(b"\n") + 1])


@dataclass(frozen=True)
class RecaptionResult:
    manifest: dict
    captioned: int  # records captioned by this call
    batches: int  # model calls made by this call


def recaption(
    model: str | Path | Captioner,
    json_path: str | Path,
    image_root: str | Path,
    out_dir: str | Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
) -> RecaptionResult:
    """Caption every image record of ``json_path`` and write the Recap-style dataset under ``out_dir``."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    out, image_root = Path(out_dir), Path(image_root)
    if not image_root.is_dir():
        raise DataError(
            f"{image_root}: image root not found; pass the folder the JSON's image paths are relative to"
        )
    records = [r for r in read_records(json_path) if r.get("image")]
    ids = [str(r.get("id")) for r in records]
    if len(set(ids)) != len(ids):
        raise DataError(f"{json_path}: record ids are not unique; resuming needs one id per image record")
    out.mkdir(parents=True, exist_ok=True)
    done_path = out / DONE_FILE
    _trim_partial_line(done_path)
    done = read_done(done_path)
    todo = [r for r in records if str(r.get("id")) not in done]
    logger.info(
        "recaption: %d records, %d already captioned, %d to go",
        len(records),
        len(records) - len(todo),
        len(todo),
    )

    captioner = model if hasattr(model, "caption") else load_captioner(model, device, dtype)  # type: ignore[arg-type]
    batches = 0
    with open(done_path, "a", encoding="utf-8") as handle:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            images = [open_image(image_path(image_root, r), r.get("id")) for r in batch]
            captions = captioner.caption(images, prompt, max_new_tokens)
            batches += 1
            for record, caption in zip(batch, captions, strict=True):
                line = {"id": str(record.get("id")), "image": record["image"], "caption": caption}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                done[str(record.get("id"))] = caption
            handle.flush()
            os.fsync(handle.fileno())
            logger.info("recaption: batch %d/%d", batches, math.ceil(len(todo) / batch_size))

    reset_outputs(out)
    link_path(image_root, out / IMAGES_DIR)
    recaptioned = [caption_record(str(r.get("id")), r["image"], done[str(r.get("id"))]) for r in records]
    manifest = {
        "source": "recaption",
        "model": getattr(captioner, "name", str(model)),
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "decoding": "greedy",
        "counts": {
            "records": len(recaptioned),
            "empty_captions": sum(not r["conversations"][-1]["value"] for r in recaptioned),
        },
    }
    return RecaptionResult(finish_layout(out, manifest, recaptioned), len(todo), batches)
