"""``llava-more models`` (sizes and shapes of every model, or ``--backbones``: every built-in and declared
backbone), ``llava-more init-model`` (initial bundle) and ``llava-more import-model`` (a published
checkpoint as a bundle)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llava_more.model.llm import SIZES, list_llms
from llava_more.model.vision import list_visions

_TABLE_COLUMNS = (
    "id",
    "model_type",
    "llm_params",
    "vision_params",
    "projector_in",
    "projector_out",
    "image_tokens",
)


_BACKBONE_COLUMNS = ("id", "kind", "origin", "family", "params", "template", "image_tokens", "source")

# The study `llava-more models` describes by default: the paper's.
DEFAULT_STUDY = "paper"


def _pairs(args: argparse.Namespace) -> list[tuple[str, str, tuple[int, ...] | bool | None]]:
    """(llm, vision, s2) of the study's initial models: ``--study``, else the paper study when
    params.yaml defines one, else every registered pair (``--all``)."""
    from llava_more.config import load_params

    params = load_params(args.params) if Path(args.params).exists() else None
    name = args.study or (None if args.all else DEFAULT_STUDY)
    if name is None or params is None or (args.study is None and DEFAULT_STUDY not in params.studies):
        return [(llm, vision, None) for llm in list_llms() for vision in list_visions()]
    study = params.study(name)
    pairs = []
    for exp in study.pairs.values():
        # Explicit scales are for the study's size; the real-size record uses the encoder's defaults.
        scales = exp.s2_scales if (exp.s2 and exp.s2_scales and args.size == study.size) else exp.s2
        if (exp.llm, exp.vision, scales) not in pairs:  # a study's seeds share their architecture
            pairs.append((exp.llm, exp.vision, scales))
    return pairs


def _load_declarations(params: Path) -> None:
    """params.yaml's ``backbones`` section into the registry (the file's other sections are not needed)."""
    from llava_more.model.declarations import declare

    if params.exists():
        import yaml

        raw = yaml.safe_load(params.read_text()) or {}
        declare(raw.get("backbones") if isinstance(raw, dict) else None, params.resolve().parent)


def _print(records: list[dict], columns: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        for record in records:
            print(json.dumps(record))
        return
    print("\t".join(columns))
    for record in records:
        print("\t".join(str(record.get(c, "")) for c in columns))


def _models(args: argparse.Namespace) -> int:
    from llava_more.model.describe import describe_backbone, describe_model  # torch: only when it runs

    if args.backbones:
        _load_declarations(args.params)
        records = [describe_backbone("llm", i) for i in list_llms()]
        records += [describe_backbone("vision", i) for i in list_visions()]
        _print(records, _BACKBONE_COLUMNS, args.json)
        return 0
    records = [describe_model(llm, vision, s2, size=args.size) for llm, vision, s2 in _pairs(args)]
    _print(records, _TABLE_COLUMNS, args.json)
    return 0


def _init_model(args: argparse.Namespace) -> int:
    from llava_more.model.initialize import init_model  # torch: only when the command runs
    from llava_more.outputs import check_outputs

    check_outputs(
        {"--tokenizer": args.tokenizer, "--llm-path": args.llm_path, "--vision-path": args.vision_path},
        {"--out": args.out},
    )
    _load_declarations(args.params)
    init_model(
        args.llm,
        args.vision,
        size=args.size,
        tokenizer_dir=args.tokenizer,
        out_dir=args.out,
        s2_scales=args.s2_scales or args.s2,
        pretrained=args.pretrained,
        llm_path=args.llm_path,
        vision_path=args.vision_path,
        seed=args.seed,
        system_prompt=not args.no_system_prompt,
    )
    return 0


def _import_model(args: argparse.Namespace) -> int:
    from llava_more.model.checkpoint_import import ImportOptions, import_checkpoint  # torch: on use

    options = ImportOptions(
        llm_id=args.llm,
        vision_id=args.vision,
        vision_tower=args.vision_tower,
        llm_base=args.llm_base,
        template=args.template,
        dtype=args.dtype,
        expect_s2=None if args.expect_s2 is None else args.expect_s2 == "yes",
    )
    import_checkpoint(args.source, args.out, options)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser(
        "models",
        help="parameter counts and projector / token shapes of each model (built on the meta device)",
    )
    models.add_argument("--json", action="store_true", help="one JSON record per line")
    models.add_argument(
        "--study", default=None, help="this study's models (default: the paper study, if params.yaml has it)"
    )
    models.add_argument("--params", default="params.yaml", type=Path)
    models.add_argument("--all", action="store_true", help="every registered LLM x encoder pair (no S2)")
    models.add_argument("--size", default="real", choices=SIZES)
    models.add_argument(
        "--backbones",
        action="store_true",
        help="list every backbone instead: built-in ones and those declared in params.yaml (backbones:)",
    )
    models.set_defaults(func=_models)

    init = sub.add_parser("init-model", help="build a pair's initial model and save it as a bundle")
    init.add_argument(
        "--llm",
        required=True,
        metavar="ID",
        help="a built-in LLM id or one declared in params.yaml (backbones:)",
    )
    init.add_argument(
        "--vision",
        required=True,
        metavar="ID",
        help="a built-in encoder id or one declared in params.yaml (backbones:)",
    )
    init.add_argument(
        "--s2", action="store_true", help="S2 multi-scale features with the encoder's default scales"
    )
    init.add_argument(
        "--s2-scales", type=int, nargs="+", metavar="PX", help="explicit S2 scales (implies --s2)"
    )
    init.add_argument("--size", required=True, choices=SIZES)
    init.add_argument(
        "--tokenizer",
        default=None,
        type=Path,
        metavar="DIR",
        help="tokenizer folder (default: the LLM checkpoint's own tokenizer)",
    )
    init.add_argument("--out", required=True, type=Path, metavar="DIR", help="bundle folder to write")
    init.add_argument("--pretrained", action="store_true", help="load the LLM and encoder checkpoints")
    init.add_argument("--llm-path", default=None, help="LLM checkpoint (default: the registry's HF id)")
    init.add_argument(
        "--vision-path", default=None, help="encoder checkpoint (default: the registry's HF id)"
    )
    init.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    init.add_argument(
        "--params",
        default="params.yaml",
        type=Path,
        help="params.yaml whose backbones section declares more ids",
    )
    init.add_argument(
        "--no-system-prompt",
        action="store_true",
        help="use the chat template without its default system prompt (template id <id>+no-system)",
    )
    init.set_defaults(func=_init_model)

    imp = sub.add_parser(
        "import-model",
        help="turn a published LLaVA checkpoint (original LLaVA format or transformers llava) into a bundle",
    )
    imp.add_argument(
        "source", help="checkpoint folder or Hugging Face Hub id (e.g. aimagelab/LLaVA_MORE-...)"
    )
    imp.add_argument("--out", required=True, type=Path, metavar="DIR", help="bundle folder to write")
    imp.add_argument("--llm", default=None, metavar="ID", help="the LLM's id (default: from config.json)")
    imp.add_argument(
        "--vision", default=None, metavar="ID", help="the encoder's id (default: from config.json)"
    )
    imp.add_argument(
        "--vision-tower",
        default=None,
        metavar="PATH_OR_ID",
        help="where the encoder comes from (default: mm_vision_tower, or its Hub id when that path is not here)",
    )
    imp.add_argument(
        "--llm-base",
        default=None,
        metavar="PATH_OR_ID",
        help="LLM checkpoint for pretrain-only releases (default: _name_or_path, else the registry's id)",
    )
    imp.add_argument(
        "--template", default=None, metavar="ID", help="chat template id (default: <llm template>+original)"
    )
    imp.add_argument("--dtype", default=None, help="weights dtype (default: the checkpoint's)")
    imp.add_argument(
        "--expect-s2",
        choices=("yes", "no"),
        default=None,
        help="refuse a checkpoint whose S2 setting differs",
    )
    imp.set_defaults(func=_import_model)
