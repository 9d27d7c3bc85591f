"""Real tokenizers for the tests: llama.cpp's vocab-only GGUF files, from the llama-cpp-python sdist.

llama.cpp keeps vocab-only GGUF files of real tokenizers (Llama-3 BPE, Llama-2 SentencePiece, Phi-3,
Qwen2, DeepSeek, GPT-2...) in its ``models/`` folder, which the ``llama-cpp-python`` source archive on
the package index carries. The first use downloads that archive with pip (without installing it,
which would compile llama.cpp), extracts only the ``ggml-vocab-*.gguf`` files, and converts each one
used to a Hugging Face tokenizer folder (``transformers`` reads GGUF with the ``gguf`` package; the
conversion takes seconds per file, so its result is kept too). Everything lives in a cache outside the
repository (``LLAVA_MORE_TEST_CACHE``, default ``~/.cache/llava-more-tests``), reused by later runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from functools import cache
from pathlib import Path

# Pinned: the fixture set (and so the expected vocabularies) must not move under the tests.
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
VOCAB_PREFIX = "ggml-vocab-"


def cache_dir() -> Path:
    return Path(os.environ.get("LLAVA_MORE_TEST_CACHE") or Path.home() / ".cache" / "llava-more-tests")


def _archive(root: Path) -> Path:
    found = sorted(root.glob("llama_cpp_python-*.tar.gz"))
    if found:
        return found[-1]
    staging = root / f".download-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             LLAMA_CPP_PYTHON, "-d", str(staging)],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        archives = sorted(staging.glob("llama_cpp_python-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"could not download {LLAMA_CPP_PYTHON} (the real-tokenizer fixtures) from the package index:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        target = root / archives[0].name
        os.replace(archives[0], target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def gguf_dir() -> Path:
    """The folder holding every ``ggml-vocab-*.gguf`` of the pinned llama.cpp (extracted once)."""
    root = cache_dir()
    out = root / "gguf"
    if out.is_dir() and any(out.glob(f"{VOCAB_PREFIX}*.gguf")):
        return out
    root.mkdir(parents=True, exist_ok=True)
    archive = _archive(root)
    staging = root / f".gguf-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with tarfile.open(archive) as tar:
        members = [
            m for m in tar.getmembers()
            if m.isfile() and "/models/" in m.name and Path(m.name).name.startswith(VOCAB_PREFIX)
            and m.name.endswith(".gguf")
        ]  # fmt: skip
        for member in members:
            member.name = Path(member.name).name  # flat, and nothing outside the staging folder
            tar.extract(member, staging, filter="data")
    if not members:
        raise RuntimeError(f"{archive}: no {VOCAB_PREFIX}*.gguf files under models/")
    try:
        os.replace(staging, out)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return out


@cache
def real_tokenizer(name: str):
    """The Hugging Face tokenizer of ``ggml-vocab-<name>.gguf`` (converted once, then read from the cache)."""
    from transformers import AutoTokenizer

    converted = cache_dir() / "tokenizers" / name
    if not (converted / "tokenizer.json").is_file():
        source = gguf_dir()
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=f"{VOCAB_PREFIX}{name}.gguf")
        staging = converted.with_name(f".{name}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        tokenizer.save_pretrained(staging)
        converted.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(converted, ignore_errors=True)
        os.replace(staging, converted)
    return AutoTokenizer.from_pretrained(converted)
