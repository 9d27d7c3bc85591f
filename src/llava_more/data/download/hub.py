"""The LLaVA datasets published on the Hugging Face Hub: LCS-558K (stage 1) and LLaVA-Instruct-665K (stage 2).

Both end in the common layout (``data.json`` + ``images/`` + ``manifest.json``, see ``layout.py``).

LCS-558K (``liuhaotian/LLaVA-Pretrain``): ``blip_laion_cc_sbu_558k.json`` and ``images.zip``
(about 27 GB), fetched with ``huggingface_hub.hf_hub_download`` into a work folder (resumable;
``HF_ENDPOINT`` / ``endpoint`` picks a mirror), the zip extracted safely and resumably. A
pre-staged copy (``local_path``) is the folder holding the JSON and ``images/`` (or ``images.zip``).

LLaVA-Instruct-665K: ``llava_v1_5_mix665k.json`` from ``liuhaotian/LLaVA-Instruct-150K``; its
images are not on the Hub and must be pre-staged under one root, as LLaVA-1.5 lays them out (see
``INSTRUCT_IMAGE_SOURCES`` for where each folder comes from). Pre-staged data is linked, not
copied.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llava_more.data.download.archive import extract_archive
from llava_more.data.download.layout import (
    DATA_JSON,
    IMAGES_DIR,
    finish_layout,
    link_or_copy,
    link_path,
    reset_outputs,
)
from llava_more.errors import DataError

logger = logging.getLogger(__name__)

LCS_JSON = "blip_laion_cc_sbu_558k.json"
LCS_IMAGES_ZIP = "images.zip"
LCS_IMAGES_DIR = "images"
HOW_MANY_IMAGES_TO_SPOT_CHECK = 5

# Folder under the image root -> where LLaVA-1.5 says to get it (its README, "Visual Instruction Tuning").
INSTRUCT_IMAGE_SOURCES: dict[str, str] = {
    "coco/train2017": "COCO train2017: http://images.cocodataset.org/zips/train2017.zip",
    "gqa/images": "GQA images: https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip",
    "ocr_vqa/images": "OCR-VQA: the dataset's download script (images saved as .jpg), see the LLaVA-1.5 README",
    "textvqa/train_images": "TextVQA train_val_images: https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip",
    "vg/VG_100K": "Visual Genome part 1: https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip",
    "vg/VG_100K_2": "Visual Genome part 2: https://cs.stanford.edu/people/rak248/VG_100K_2/images2.zip",
}


@dataclass(frozen=True)
class HubFile:
    """Where one file comes from: a dataset repo on the Hub and a file name in it."""

    repo_id: str
    filename: str
    revision: str | None = None


def hub_download(file: HubFile, local_dir: Path, endpoint: str | None = None) -> Path:
    """``hf_hub_download`` into ``local_dir`` (resumes a partial file; a complete one is not fetched again)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(
            file.repo_id,
            file.filename,
            repo_type="dataset",
            revision=file.revision,
            local_dir=local_dir,
            endpoint=endpoint,
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise DataError(
            f"could not download {file.filename} from the Hub dataset {file.repo_id} ({err}); check the network "
            f"(or HF_ENDPOINT), or pre-stage the file and set local_path in params.yaml"
        ) from None
    return Path(path)


def _read_records(json_path: Path) -> list[dict]:
    try:
        with open(json_path, encoding="utf-8") as handle:
            records = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{json_path}: not a readable LLaVA JSON file ({err}); download it again") from None
    if not isinstance(records, list):
        raise DataError(
            f"{json_path}: a LLaVA JSON file must be a list of records, got {type(records).__name__}"
        )
    return records


def _image_paths(records: Iterable[dict]) -> list[str]:
    return [r["image"] for r in records if isinstance(r, dict) and isinstance(r.get("image"), str)]


def _spot_check(image_root: Path, image_paths: list[str], json_path: Path) -> None:
    """The first few images must exist: a wrong root (an extra folder level) fails now, not mid-training."""
    for relpath in image_paths[:HOW_MANY_IMAGES_TO_SPOT_CHECK]:
        if not (image_root / relpath).is_file():
            raise DataError(
                f"{image_root / relpath}: image of {json_path.name} not found; the image root must hold the "
                f"paths of the JSON's 'image' fields (e.g. {relpath})"
            )


def _find_image_root(extracted: Path, image_paths: list[str]) -> Path:
    """Zips differ on whether they wrap their content in a top folder: take the level where images are."""
    candidates = [extracted] + sorted(p for p in extracted.iterdir() if p.is_dir())
    sample = image_paths[:HOW_MANY_IMAGES_TO_SPOT_CHECK]
    for candidate in candidates:
        if all((candidate / relpath).is_file() for relpath in sample):
            return candidate
    raise DataError(
        f"{extracted}: the extracted images do not contain {sample[0] if sample else '(no image)'} at the top or "
        f"one folder down; is this the {LCS_IMAGES_ZIP} of the dataset?"
    )


# --------------------------------------------------------------------------- LCS-558K


def fetch_llava_pretrain(
    out_dir: str | Path,
    *,
    hf_dataset: str = "liuhaotian/LLaVA-Pretrain",
    local_path: str | Path | None = None,
    work_dir: str | Path | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
) -> dict:
    """LCS-558K in the common layout under ``out_dir``; returns its manifest.

    With ``local_path`` the pre-staged folder is used (``images/`` linked, or ``images.zip``
    extracted into ``work_dir``); otherwise both files are downloaded into ``work_dir``.
    """
    out, work = Path(out_dir), Path(work_dir) if work_dir else Path(out_dir).parent / "download"
    reset_outputs(out)
    if local_path is not None:
        staged = Path(local_path)
        json_path = staged / LCS_JSON
        if not json_path.is_file():
            raise DataError(
                f"{json_path}: not found; the pre-staged LCS-558K folder (local_path) must hold {LCS_JSON} "
                f"and {LCS_IMAGES_DIR}/ (or {LCS_IMAGES_ZIP}) as in {hf_dataset}"
            )
        images_dir: Path | None = staged / LCS_IMAGES_DIR
        zip_path = staged / LCS_IMAGES_ZIP
        if not images_dir.is_dir() and not zip_path.is_file():
            raise DataError(
                f"{images_dir}: not found; the pre-staged LCS-558K folder must hold the extracted "
                f"{LCS_IMAGES_DIR}/ folder or {LCS_IMAGES_ZIP}"
            )
        origin = "pre-staged"
        link_path(json_path, out / DATA_JSON)
    else:
        json_file = hub_download(HubFile(hf_dataset, LCS_JSON, revision), work / "hub", endpoint)
        zip_path = hub_download(HubFile(hf_dataset, LCS_IMAGES_ZIP, revision), work / "hub", endpoint)
        images_dir, origin = None, "hub"  # the Hub has only the zip
        link_or_copy(json_file, out / DATA_JSON)
        json_path = json_file

    records = _read_records(json_path)
    image_paths = _image_paths(records)
    if images_dir is not None and images_dir.is_dir():
        image_root = images_dir
    else:
        extracted = work / LCS_IMAGES_DIR
        result = extract_archive(zip_path, extracted)
        logger.info(
            "%s: %d files extracted into %s (%d new)", zip_path, result.files, extracted, result.written
        )
        image_root = _find_image_root(extracted, image_paths)
    _spot_check(image_root, image_paths, json_path)
    link_path(image_root, out / IMAGES_DIR)
    manifest = {
        "source": "llava-pretrain",
        "hf_dataset": hf_dataset,
        "revision": revision,
        "origin": origin,
        "counts": {"records": len(records), "with_image": len(image_paths)},
    }
    return finish_layout(out, manifest)


# --------------------------------------------------------------------------- LLaVA-Instruct-665K


def instruct_image_folders(image_paths: Iterable[str]) -> Counter:
    """Images per top folder (``coco/train2017``, ``vg/VG_100K``...): the folder is all but the file name."""
    return Counter(path.rsplit("/", 1)[0] if "/" in path else "." for path in image_paths)


def check_instruct_images(image_root: Path, image_paths: list[str], json_path: Path) -> Counter:
    """Every image folder the JSON uses must exist under ``image_root``; the error says where to get it."""
    folders = instruct_image_folders(image_paths)
    for folder in sorted(folders):
        if not (image_root / folder).is_dir():
            source = INSTRUCT_IMAGE_SOURCES.get(folder, "the dataset's own release")
            raise DataError(
                f"{image_root / folder}: missing image folder ({folders[folder]} images of {json_path.name} are in "
                f"it); get it from {source} and put it under the pre-staged image root"
            )
    _spot_check(image_root, image_paths, json_path)
    return folders


def fetch_llava_instruct(
    out_dir: str | Path,
    *,
    hf_dataset: str = "liuhaotian/LLaVA-Instruct-150K",
    json_name: str = "llava_v1_5_mix665k.json",
    local_path: str | Path | None = None,
    image_root: str | Path | None = None,
    work_dir: str | Path | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
) -> dict:
    """LLaVA-Instruct-665K in the common layout; returns its manifest.

    The image root is ``image_root`` or else ``local_path`` (a folder holding ``coco/``, ``gqa/``,
    ``ocr_vqa/``, ``textvqa/``, ``vg/``); the JSON is taken from ``local_path`` when it is there,
    else downloaded from the Hub.
    """
    out, work = Path(out_dir), Path(work_dir) if work_dir else Path(out_dir).parent / "download"
    reset_outputs(out)
    root = (
        Path(image_root) if image_root is not None else (Path(local_path) if local_path is not None else None)
    )
    if root is None:
        folders = "; ".join(f"{folder}: {source}" for folder, source in INSTRUCT_IMAGE_SOURCES.items())
        raise DataError(
            f"instruct_data: the {json_name} images are not on the Hub; pre-stage them under one folder and set "
            f"local_path to it. Folders: {folders}"
        )
    if not root.is_dir():
        raise DataError(
            f"{root}: pre-staged image root not found; set local_path to the folder holding coco/, gqa/ ..."
        )
    staged_json = Path(local_path) / json_name if local_path is not None else None
    if staged_json is not None and staged_json.is_file():
        json_path, origin = staged_json, "pre-staged"
        link_path(json_path, out / DATA_JSON)
    else:
        json_path, origin = (
            hub_download(HubFile(hf_dataset, json_name, revision), work / "hub", endpoint),
            "hub",
        )
        link_or_copy(json_path, out / DATA_JSON)
    records = _read_records(json_path)
    image_paths = _image_paths(records)
    folders = check_instruct_images(root, image_paths, json_path)
    link_path(root, out / IMAGES_DIR)
    manifest = {
        "source": "llava-instruct",
        "hf_dataset": hf_dataset,
        "json": json_name,
        "revision": revision,
        "origin": origin,
        "counts": {
            "records": len(records),
            "with_image": len(image_paths),
            "text_only": len(records) - len(image_paths),
            "images_per_folder": dict(sorted(folders.items())),
        },
    }
    return finish_layout(out, manifest)
