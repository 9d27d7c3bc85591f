"""Real data sources: the LLaVA sets on the Hugging Face Hub, seeded web subsets downloaded with
img2dataset (and their offline demo twins), balanced mixes, safe archive extraction and dense
re-captioning. Every fetched dataset ends in the common layout of ``layout.py``.

Names are imported lazily, so the CLI can list commands without importing torch or img2dataset.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "extract_archive": "llava_more.data.download.archive",
    "fetch_llava_pretrain": "llava_more.data.download.hub",
    "fetch_llava_instruct": "llava_more.data.download.hub",
    "INSTRUCT_IMAGE_SOURCES": "llava_more.data.download.hub",
    "fetch_web_subset": "llava_more.data.download.web_subset",
    "WebSubsetResult": "llava_more.data.download.web_subset",
    "DownloadSettings": "llava_more.data.download.downloader",
    "mix_datasets": "llava_more.data.download.mix",
    "fetch_demo_web": "llava_more.data.download.demo_web",
    "write_twin_metadata": "llava_more.data.download.demo_web",
    "serve_directory": "llava_more.data.download.http_server",
    "closed_port_url": "llava_more.data.download.http_server",
    "recaption": "llava_more.data.download.recaption",
    "load_captioner": "llava_more.data.download.recaption",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llava_more.data.download' has no attribute {name!r}")
