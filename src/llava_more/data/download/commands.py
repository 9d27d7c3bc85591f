"""CLI for real data: ``fetch-data`` (a ``params.yaml`` data entry), ``fetch-web-twin`` (a demo set through
the web-download path) and ``recaption`` (dense captions from a multimodal model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llava_more.device import add_device_argument, resolve_device
from llava_more.errors import ConfigError
from llava_more.outputs import atomic_dir, check_outputs

# A dataset folder's own files (as ``llava_more.data.demo_files`` names them): an earlier fetch may be replaced.
DATASET_SIGNATURE = ("manifest.json", "data.json")


def _params(args: argparse.Namespace):
    from llava_more.config import load_params

    return load_params(args.params, check_backbones=False)


def _settings(args: argparse.Namespace, base):
    from dataclasses import replace

    changes = {k: v for k, v in (("processes", args.processes), ("threads", args.threads)) if v is not None}
    if args.output_format is not None:
        changes["output_format"] = args.output_format
    return replace(base, **changes)


def _fetch_pretrain(args: argparse.Namespace, params, base_dir: Path) -> dict:
    from llava_more import paths
    from llava_more.data.download.downloader import DownloadSettings
    from llava_more.data.download.hub import fetch_llava_pretrain
    from llava_more.data.download.mix import mix_datasets
    from llava_more.data.download.web_subset import DEFAULT_OVERSAMPLE, fetch_web_subset

    if args.name not in params.pretrain_data:
        raise ConfigError(
            f"{args.params}: no pretrain_data entry {args.name!r}; entries: {', '.join(params.pretrain_data)}"
        )
    src = params.pretrain_data[args.name]
    if src.source == "llava-pretrain":
        return fetch_llava_pretrain(
            args.out,
            hf_dataset=src.get("hf_dataset"),
            local_path=_local(src, base_dir),
            work_dir=args.work_dir,
            endpoint=args.endpoint,
        )
    if src.source == "web-subset":
        result = fetch_web_subset(
            args.out,
            metadata=src.get("metadata"),
            caption_field=src.get("caption_field"),
            size=src.get("size"),
            seed=src.get("seed"),
            oversample=float(src.get("oversample", DEFAULT_OVERSAMPLE)),
            work_dir=args.work_dir,
            settings=_settings(args, DownloadSettings()),
            local_path=_local(src, base_dir),
            base_dir=base_dir,
            endpoint=args.endpoint,
        )
        return result.manifest
    if src.source == "mix":
        parts = {part: base_dir / paths.raw_dir(paths.pretrain_dir(part)) for part in src.get("parts")}
        return mix_datasets(parts, args.out, size=src.get("size"), seed=src.get("seed"))
    raise ConfigError(
        f"pretrain_data.{args.name} is a demo set: generate it with `llava-more make-demo-data pretrain`, "
        f"or its web-download twin with `llava-more fetch-web-twin`"
    )


def _fetch_instruct(args: argparse.Namespace, params, base_dir: Path) -> dict:
    from llava_more.data.download.hub import fetch_llava_instruct

    if args.name not in params.instruct_data:
        raise ConfigError(
            f"{args.params}: no instruct_data entry {args.name!r}; entries: {', '.join(params.instruct_data)}"
        )
    src = params.instruct_data[args.name]
    if src.source != "llava-instruct":
        raise ConfigError(
            f"instruct_data.{args.name} is a demo set: generate it with `llava-more make-demo-data instruct`"
        )
    return fetch_llava_instruct(
        args.out,
        hf_dataset=src.get("hf_dataset"),
        json_name=src.get("json"),
        local_path=_local(src, base_dir),
        image_root=args.image_root,
        work_dir=args.work_dir,
        endpoint=args.endpoint,
    )


def _local(src, base_dir: Path) -> Path | None:
    local = src.get("local_path")
    if local is None:
        return None
    return Path(local) if Path(local).is_absolute() else base_dir / local


def _work_dir(args: argparse.Namespace) -> Path:
    """``--work-dir``, or the default every fetch uses: ``<out>/../download``."""
    return Path(args.work_dir) if args.work_dir else Path(args.out).parent / "download"


def _fetch_inputs(args: argparse.Namespace, params, base_dir: Path) -> dict:
    """What a fetch reads: params.yaml, a pre-staged copy, a pre-staged image root, a mix's parts."""
    from llava_more import paths

    entries = params.pretrain_data if args.kind == "pretrain" else params.instruct_data
    src = entries.get(args.name)
    inputs: dict = {"--params": args.params, "--image-root": getattr(args, "image_root", None)}
    if src is not None:
        inputs["local_path"] = _local(src, base_dir)
        if src.source == "mix":
            inputs["parts"] = [
                base_dir / paths.raw_dir(paths.pretrain_dir(p)) for p in src.get("parts") or []
            ]
    return inputs


def _fetch(args: argparse.Namespace) -> int:
    params = _params(args)
    base_dir = Path(args.params).resolve().parent
    fetch = _fetch_pretrain if args.kind == "pretrain" else _fetch_instruct
    check_outputs(_fetch_inputs(args, params, base_dir), {"--out": args.out, "--work-dir": _work_dir(args)})
    # The dataset is assembled in a staging folder: a failed fetch leaves an earlier one in place.
    with atomic_dir(args.out, signature=DATASET_SIGNATURE) as staging:
        manifest = fetch(
            argparse.Namespace(**{**vars(args), "out": staging, "work_dir": _work_dir(args)}),
            params,
            base_dir,
        )
    print(json.dumps(manifest, indent=1))
    return 0


def _fetch_twin(args: argparse.Namespace) -> int:
    from llava_more.data.download.demo_web import DEMO_SETTINGS, fetch_demo_web

    params = _params(args)
    src = params.pretrain_data.get(args.name)
    if src is None or not src.is_demo:
        demo = [n for n, s in params.pretrain_data.items() if s.is_demo]
        raise ConfigError(
            f"{args.params}: {args.name!r} is not a demo pretrain_data entry; demo entries: {', '.join(demo)}"
        )
    check_outputs({"--params": args.params}, {"--out": args.out, "--work-dir": _work_dir(args)})
    with atomic_dir(args.out, signature=DATASET_SIGNATURE) as staging:
        manifest = fetch_demo_web(
            staging,
            kind=src.get("kind"),
            size=src.get("size"),
            seed=src.get("seed"),
            work_dir=_work_dir(args),
            settings=_settings(args, DEMO_SETTINGS),
        )
    print(json.dumps(manifest, indent=1))
    return 0


def _recaption(args: argparse.Namespace) -> int:
    from llava_more.data.download.recaption import DEFAULT_PROMPT, recaption

    device = resolve_device(args.device, purpose="recaptioning")
    # The output folder is also the resumable state (captions.jsonl), so it is written in place; its
    # data.json and manifest.json are replaced atomically once every caption is there.
    check_outputs(
        {"--model": args.model, "--json": args.json, "--image-root": args.image_root}, {"--out": args.out}
    )
    result = recaption(
        args.model,
        args.json,
        args.image_root,
        args.out,
        batch_size=args.batch_size,
        prompt=args.prompt or DEFAULT_PROMPT,
        max_new_tokens=args.max_new_tokens,
        device=device,
        dtype=args.dtype,
    )
    print(json.dumps({**result.manifest, "captioned_now": result.captioned}, indent=1))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _download_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--work-dir", default=None, help="downloads and resumable state (default: <out>/../download)"
    )
    parser.add_argument("--processes", type=_positive, default=None, help="img2dataset processes")
    parser.add_argument("--threads", type=_positive, default=None, help="img2dataset threads per process")
    parser.add_argument(
        "--output-format", choices=("files", "webdataset"), default=None, help="img2dataset storage"
    )


def register(sub: argparse._SubParsersAction) -> None:
    fetch = sub.add_parser(
        "fetch-data", help="download (or link a pre-staged copy of) a real dataset of params.yaml"
    )
    fetch.add_argument("--params", default="params.yaml")
    fetch.add_argument("--name", required=True, help="a key of pretrain_data or instruct_data")
    fetch.add_argument("--kind", required=True, choices=("pretrain", "instruct"))
    fetch.add_argument(
        "--out", required=True, help="dataset folder to write (data.json + images/ + manifest.json)"
    )
    fetch.add_argument(
        "--image-root", default=None, help="instruct: pre-staged image root (overrides local_path)"
    )
    fetch.add_argument(
        "--endpoint", default=None, help="Hugging Face endpoint (default: HF_ENDPOINT or the Hub)"
    )
    _download_options(fetch)
    fetch.set_defaults(func=_fetch)

    twin = sub.add_parser(
        "fetch-web-twin",
        help="serve a demo alttext/recap set over local HTTP and fetch it like LAION/Recap (img2dataset)",
    )
    twin.add_argument("--params", default="params.yaml")
    twin.add_argument(
        "--name", required=True, help="a demo pretrain_data entry of kind alttext, recap or mix"
    )
    twin.add_argument("--out", required=True, help="dataset folder to write")
    _download_options(twin)
    twin.set_defaults(func=_fetch_twin)

    recap = sub.add_parser("recaption", help="write dense captions for an image set with a multimodal model")
    recap.add_argument(
        "--model", required=True, help="a llava-more bundle folder or a Hugging Face model id/folder"
    )
    recap.add_argument("--json", required=True, help="LLaVA JSON whose image records are captioned")
    recap.add_argument("--image-root", required=True, help="folder the JSON's image paths are relative to")
    recap.add_argument(
        "--out", required=True, help="output folder (data.json, images -> image root, captions.jsonl)"
    )
    recap.add_argument("--batch-size", type=_positive, default=8)
    recap.add_argument("--max-new-tokens", type=_positive, default=128)
    recap.add_argument("--prompt", default=None, help="captioning prompt (default: Recap-DataComp's)")
    add_device_argument(recap)
    recap.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    recap.set_defaults(func=_recaption)
