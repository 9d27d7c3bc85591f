"""The demo tokenizer's training corpus: the text of LLaVA-format dataset files.

Every human/gpt turn (without the ``<image>`` marker) and any caption field of every record.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from llava_more.data.llava_json import read_records
from llava_more.errors import DataError
from llava_more.text.templates import IMAGE_TOKEN

# Caption fields some LLaVA-style files carry beside the conversations (e.g. the LCS-558K metadata).
CAPTION_FIELDS = ("caption", "blip_caption")


def read_corpus(json_paths: Iterable[str | Path]) -> list[str]:
    """The texts of all records of the given ``.json`` / ``.jsonl`` LLaVA files, in file order."""
    texts: list[str] = []
    for path in json_paths:
        for index, record in enumerate(read_records(path)):
            about = f"{path}: record {record.get('id', f'at index {index}')!r}"
            turns = record.get("conversations", [])
            if not isinstance(turns, list) or not all(
                isinstance(turn, dict) and isinstance(turn.get("value"), str) for turn in turns
            ):
                raise DataError(
                    f"{about}: 'conversations' must be a list of {{'from', 'value'}} turns with string values; "
                    "fix the record or run `llava-more validate-data` first"
                )
            texts += [turn["value"].replace(IMAGE_TOKEN, "").strip() for turn in turns]
            texts += [record[field] for field in CAPTION_FIELDS if isinstance(record.get(field), str)]
    texts = [text for text in texts if text]
    if not texts:
        raise DataError("the given dataset files hold no text to train a tokenizer on; pass LLaVA JSON files")
    return texts
