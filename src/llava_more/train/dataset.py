"""Training samples: a LLaVA JSON dataset turned into ``input_ids`` / ``labels`` / ``pixel_values``.

Text goes through ``llava_more.text.encode.encode_conversation`` with the stage's template (``plain`` in
stage 1, the LLM's chat template in stage 2), images through the bundle's image processor, either
resized as they are (``square``) or first padded to a square with the processor's mean colour
(``pad``, LLaVA-1.5's ``expand2square``).

Before training every record is encoded once (text only) to get its exact token length, for length
grouping, and to drop the samples ``max_length`` cannot hold (counted and logged). The scan is
cached in the work dir so a resumed or second process reads it instead of redoing it. Samples
(token ids, labels and the preprocessed image) are also kept in memory after their first use, up to
``MEMO_BYTES`` per process, so later epochs of a small dataset (the demo's) skip template
rendering, image decoding and preprocessing; a real dataset fills the budget and reads the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from llava_more.errors import DataError
from llava_more.model.preprocess import mean_colour, pixel_values
from llava_more.text import IMAGE_TOKEN
from llava_more.text.encode import IGNORE_INDEX, SampleTooLong, encode_conversation, resolve_template

logger = logging.getLogger(__name__)

MEMO_BYTES = 1 << 30


def with_image_token(conversations: Sequence[dict], has_image: bool) -> list[dict]:
    """LLaVA's convention: an image record whose text lacks ``<image>`` gets it in its first human turn."""
    turns = [dict(turn) for turn in conversations]
    if has_image and not any(IMAGE_TOKEN in str(turn.get("value", "")) for turn in turns):
        for turn in turns:
            if turn.get("from") in ("human", "user"):
                turn["value"] = f"{IMAGE_TOKEN}\n{turn['value']}"
                break
    return turns


class LlavaTrainDataset(Dataset):
    """Items: ``{"input_ids", "labels"[, "pixel_values"]}`` tensors for one kept record of ``source``.

    ``source`` is a ``llava_more.data.llava_json.LlavaJsonDataset`` (records in ``.records``, decoded items by
    index). ``lengths`` are token counts, negative for text-only samples (modality-aware grouping).
    """

    def __init__(
        self,
        source: Any,
        tokenizer: Any,
        image_processor: Any,
        *,
        template_id: str,
        num_image_tokens: int,
        max_length: int,
        image_aspect_ratio: str,
        cache_dir: str | Path | None = None,
    ):
        self.source = source
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template_id = template_id
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.image_aspect_ratio = image_aspect_ratio
        self._memo: dict[int, dict[str, torch.Tensor]] = {}
        self._memo_bytes = 0
        self.indices, self.lengths = self._scan(cache_dir)
        if not self.indices:
            raise DataError(
                f"{source.json_path}: no record fits max_length={max_length} tokens; raise the protocol's "
                "max_length or check the data"
            )

    # ------------------------------------------------------------------ scan
    def _encode(self, record: dict) -> dict[str, list[int]]:
        has_image = record.get("image") is not None
        conversations = with_image_token(record["conversations"], has_image)
        if not has_image and any(IMAGE_TOKEN in str(turn.get("value", "")) for turn in conversations):
            raise DataError(f"record {record.get('id')!r} has {IMAGE_TOKEN} in its text but no image")
        return encode_conversation(
            self.tokenizer,
            conversations,
            self.template_id,
            num_image_tokens=self.num_image_tokens,
            max_length=self.max_length,
        )

    def _scan_key(self) -> str:
        """Digest of everything a scan's result depends on: the records, the template and the tokenizer."""
        stat = os.stat(self.source.json_path)
        template = resolve_template(self.template_id, self.tokenizer)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        vocabulary = (
            backend.to_str()
            if backend is not None
            else json.dumps(sorted(self.tokenizer.get_vocab().items()))
        )
        digest = hashlib.sha256()
        for part in (
            str(Path(self.source.json_path).resolve()), stat.st_size, stat.st_mtime_ns,
            repr(template), self.num_image_tokens, self.max_length, vocabulary,
        ):  # fmt: skip
            digest.update(str(part).encode())
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    def _scan(self, cache_dir: str | Path | None) -> tuple[list[int], list[int]]:
        cache = Path(cache_dir) / f"scan-{self._scan_key()}.json" if cache_dir else None
        if cache is not None and cache.is_file():
            cached = json.loads(cache.read_text())
            return cached["indices"], cached["lengths"]
        indices, lengths, too_long = [], [], 0
        for index, record in enumerate(self.source.records):
            try:
                encoded = self._encode(record)
            except SampleTooLong:
                too_long += 1
                continue
            except DataError as err:
                raise DataError(
                    f"{self.source.json_path}: record {record.get('id')!r} (index {index}): {err}; fix or remove "
                    "it, or run `llava-more validate-data` to quarantine bad records"
                ) from None
            indices.append(index)
            size = len(encoded["input_ids"])
            lengths.append(size if record.get("image") is not None else -size)
        if too_long:
            logger.warning(
                "%s: dropped %d of %d samples longer than max_length=%d tokens",
                self.source.json_path, too_long, len(self.source.records), self.max_length,
            )  # fmt: skip
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"indices": indices, "lengths": lengths}))
            os.replace(tmp, cache)
        return indices, lengths

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.indices)

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        return pixel_values(self.image_processor, [image], self.image_aspect_ratio)[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index in self._memo:
            return {key: value.clone() for key, value in self._memo[index].items()}
        item = self.source[self.indices[index]]
        encoded = self._encode(self.source.records[self.indices[index]])
        sample = {
            "input_ids": torch.tensor(encoded["input_ids"], dtype=torch.long),
            "labels": torch.tensor(encoded["labels"], dtype=torch.long),
        }
        if item["image"] is not None:
            sample["pixel_values"] = self.pixel_values(item["image"])
        size = sum(value.numel() * value.element_size() for value in sample.values())
        if self._memo_bytes + size <= MEMO_BYTES:
            self._memo[index] = {key: value.clone() for key, value in sample.items()}
            self._memo_bytes += size
        return sample

    def placeholder_sample(self) -> dict[str, torch.Tensor]:
        """An unsupervised image-only row: keeps the vision tower in every rank's step (see the collator)."""
        image_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        size = self.num_image_tokens
        blank = Image.new("RGB", (32, 32), mean_colour(self.image_processor))
        return {
            "input_ids": torch.full((size,), image_id, dtype=torch.long),
            "labels": torch.full((size,), IGNORE_INDEX, dtype=torch.long),
            "pixel_values": self.pixel_values(blank),
        }


@dataclass
class LlavaCollator:
    """Right-pad ``input_ids`` (pad id) and ``labels`` (-100), build ``attention_mask``, stack images.

    Text-only samples contribute no ``pixel_values`` row (the model matches image features to image
    tokens over the whole batch). A batch without any image gets ``placeholder`` appended, an
    unsupervised image row, so the vision tower and projector run in every micro-batch: with several
    processes a rank skipping them while the others run them deadlocks ZeRO-3's parameter gathering,
    and the projector then gets a zero gradient (AdamW keeps moving it by momentum, as in LLaVA)
    instead of none (AdamW skips it), which would make 1 and N devices train differently.
    """

    pad_token_id: int
    placeholder: dict[str, torch.Tensor] | None = None

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self.placeholder is not None and not any("pixel_values" in f for f in features):
            features = [*features, self.placeholder]
        longest = max(len(f["input_ids"]) for f in features)
        batch = len(features)
        input_ids = torch.full((batch, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, longest), dtype=torch.long)
        for row, feature in enumerate(features):
            size = len(feature["input_ids"])
            input_ids[row, :size] = feature["input_ids"]
            labels[row, :size] = feature["labels"]
            attention_mask[row, :size] = 1
        out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        images = [f["pixel_values"] for f in features if "pixel_values" in f]
        if images:
            out["pixel_values"] = torch.stack(images)
        return out
