"""Dense re-captioning of an image set with a multimodal model (how Recap-DataComp was made).

The captioner is one of our trained bundles (``llava_more.model.load_bundle``: its own chat
template, image processor and image-token count) or any Hugging Face image-text-to-text model
(``AutoModelForImageTextToText`` + ``AutoProcessor``, prompt from the processor's chat template).
Decoding is greedy and batched with left padding.

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

log = logging.getLogger(__name__)

# The prompt Recap-DataComp-1B used with its LLaVA-1.5-LLaMA3-8B captioner.
DEFAULT_PROMPT = "Please generate a detailed caption of this image. Please be as descriptive as possible."
DONE_FILE = "captions.jsonl"


class Captioner(Protocol):
    name: str

    def caption(self, images: Sequence[Image.Image], prompt: str, max_new_tokens: int) -> list[str]: ...


def _left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


class BundleCaptioner:
    """One of our bundles, prompted with its own template and ``<image>`` expanded to its token count."""

    def __init__(self, path: Path, device: str = "cpu", dtype: torch.dtype | None = None):
        from llava_more.model import load_bundle
        from llava_more.text import get_template

        bundle = load_bundle(path, device=device, dtype=dtype)
        self.name = path.name
        self.model = bundle.model.eval()
        self.tokenizer, self.image_processor, self.meta = bundle.tokenizer, bundle.image_processor, bundle.meta
        vocab = self.tokenizer.get_vocab()
        template = get_template(self.meta.template, self.tokenizer)
        stops = [vocab.get(t) for t in template.stop_tokens] + [self.tokenizer.eos_token_id]
        self.stop_ids = list(dict.fromkeys(t for t in stops if t is not None))
        if self.tokenizer.pad_token_id is None:
            raise UserError(f"{path}: the bundle's tokenizer has no pad token; rebuild it with apply_template")

    def _prompt_ids(self, prompt: str) -> list[int]:
        from llava_more.text import encode_prompt

        # The image slot is the template's; the prompt's own text stays text.
        turns = [{"role": "user", "content": prompt}]
        return encode_prompt(
            self.tokenizer, self.meta.template, turns, images=1, num_image_tokens=self.meta.image_tokens
        ).input_ids

    def caption(self, images: Sequence[Image.Image], prompt: str, max_new_tokens: int) -> list[str]:
        ids, mask = _left_pad([self._prompt_ids(prompt)] * len(images), self.tokenizer.pad_token_id)
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=ids.to(self.model.device),
                attention_mask=mask.to(self.model.device),
                pixel_values=pixels.to(self.model.device, dtype=self.model.dtype),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=self.stop_ids or None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return [t.strip() for t in self.tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)]


class HubCaptioner:
    """A Hugging Face image-text-to-text model (a Hub id or a local folder)."""

    def __init__(self, model_id: str, device: str = "cpu", dtype: torch.dtype | None = None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(model_id)
            self.model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=dtype or "auto").to(device).eval()
        except (OSError, ValueError) as err:
            raise UserError(
                f"captioning model {model_id!r} could not be loaded ({err}); give a llava-more bundle folder or a "
                f"Hugging Face image-text-to-text model id/folder"
            ) from None
        self.name = model_id
        self.processor.tokenizer.padding_side = "left"  # generation continues from the right end

    def caption(self, images: Sequence[Image.Image], prompt: str, max_new_tokens: int) -> list[str]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=list(images), text=[text] * len(images), padding=True, return_tensors="pt")
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        tokenizer = self.processor.tokenizer
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        new = output[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def load_captioner(model: str | Path, device: str = "cpu", dtype: torch.dtype | None = None) -> Captioner:
    """A bundle when ``model`` is a folder with ``llava_more.json``, else a Hugging Face model."""
    from llava_more.model.bundle import META_FILE

    path = Path(model)
    if (path / META_FILE).is_file():
        return BundleCaptioner(path, device, dtype)
    return HubCaptioner(str(model), device, dtype)


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
    batch_size: int = 8,
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = 128,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> RecaptionResult:
    """Caption every image record of ``json_path`` and write the Recap-style dataset under ``out_dir``."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    out, image_root = Path(out_dir), Path(image_root)
    if not image_root.is_dir():
        raise DataError(f"{image_root}: image root not found; pass the folder the JSON's image paths are relative to")
    records = [r for r in read_records(json_path) if r.get("image")]
    ids = [str(r.get("id")) for r in records]
    if len(set(ids)) != len(ids):
        raise DataError(f"{json_path}: record ids are not unique; resuming needs one id per image record")
    out.mkdir(parents=True, exist_ok=True)
    done_path = out / DONE_FILE
    _trim_partial_line(done_path)
    done = read_done(done_path)
    todo = [r for r in records if str(r.get("id")) not in done]
    log.info("recaption: %d records, %d already captioned, %d to go", len(records), len(records) - len(todo), len(todo))

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
            log.info("recaption: batch %d/%d", batches, math.ceil(len(todo) / batch_size))

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
