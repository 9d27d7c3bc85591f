"""Turn a published LLaVA checkpoint into a llava-more bundle (``llava-more import-model``).

Two formats come in:

- the original LLaVA code's (haotian-liu/LLaVA and the forks built on it: LLaVA-MORE, LLaVA++):
  ``config.json`` is the LLM's config plus ``mm_*`` fields (``mm_vision_tower``,
  ``mm_vision_select_layer``, ``mm_vision_select_feature``, ``mm_projector_type``,
  ``mm_hidden_size``, ``image_aspect_ratio``, LLaVA-MORE's ``s2`` / ``s2_scales`` / ``siglip``) under
  a ``llava_llama``/``llava_gemma``/``llava_phi`` model type; the weights are the LLM's own keys beside
  ``model.mm_projector.{0,2}.*`` and, when the release carries it, ``model.vision_tower.vision_tower.*``.
  A pretrain-only release holds ``config.json`` and ``mm_projector.bin``: its LLM comes from the base
  checkpoint it was trained on. A tower the checkpoint does not carry is loaded from its own Hub id.
- transformers' own ``llava`` checkpoints (the ``llava-hf/*`` baselines).

Either way the result is one of our bundles: plain ``LlavaForConditionalGeneration`` where it can
represent the pair exactly, our ``llava_more`` class otherwise (S2, register tokens, Gemma-2's logit
soft-capping), the tower's own image processor (resized for S2 as the original code did), the chat
template the checkpoint was trained with (``<id>+original``) and ``llava_more.json``. Anything that
cannot be mapped exactly (another projector, a missing tensor, a shape the config disagrees with,
LLaVA-NeXT tiling) stops the import with a ``UserError`` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoTokenizer,
    LlavaForConditionalGeneration,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.initialization import no_init_weights

from llava_more.errors import UnknownBackboneError, UserError
from llava_more.model.builder import llava_config
from llava_more.model.bundle import BundleMeta, save_bundle
from llava_more.model.initialize import set_generation_tokens
from llava_more.model.llava import LlavaMoreConfig
from llava_more.model.llm import get_llm, list_llms
from llava_more.model.s2_scales import validate_s2_scales
from llava_more.model.vision import VisionSpec, get_vision, list_visions
from llava_more.text.templates import IMAGE_TOKEN

logger = logging.getLogger(__name__)

# Original LLaVA model types (and class names) -> the transformers model type of their LLM.
ORIGINAL_TEXT_TYPES = {
    "llava_llama": "llama",
    "llava_gemma": "gemma2",
    "llava_phi": "phi3",
    "LlavaLlamaForCausalLM": "llama",
    "LlavaGemmaForCausalLM": "gemma2",
    "LlavaPhiForCausalLM": "phi3",
}
# config.json fields of the LLaVA code that are not part of the LLM's config.
_LLAVA_FIELDS = (
    "architectures",
    "model_type",
    "transformers_version",
    "_name_or_path",
    "freeze_mm_mlp_adapter",
    "image_aspect_ratio",
    "image_grid_pinpoints",
    "mm_hidden_size",
    "mm_patch_merge_type",
    "mm_projector_lr",
    "mm_projector_type",
    "mm_use_im_patch_token",
    "mm_use_im_start_end",
    "mm_vision_select_feature",
    "mm_vision_select_layer",
    "mm_vision_tower",
    "model_architecture",
    "s2",
    "s2_scales",
    "siglip",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "tune_mm_mlp_adapter",
    "unfreeze_mm_vision_tower",
    "use_mm_proj",
    "vision_tower",
)
# The only projector transformers' LLaVA (and ours) holds: Linear -> GELU -> Linear.
SUPPORTED_PROJECTOR = "mlp2x_gelu"
# Buffers older transformers versions saved with the weights; they are recomputed, never loaded.
_DERIVED_BUFFERS = ("rotary_emb.inv_freq", "embeddings.position_ids")
# Vision families S2 applies to in the original code (its DINOv2 towers ignore the S2 flag).
_S2_FAMILIES = ("clip_vision_model", "siglip_vision_model")
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class _Tensor:
    """Where one checkpoint tensor lives (read on demand, so a shard at a time is in memory)."""

    file: Path
    key: str


# ---------------------------------------------------------------------------------------------- sources
def resolve_checkpoint(source: str | Path) -> Path:
    """A local folder as is; a Hugging Face Hub id downloaded (config, weights, tokenizer, processor)."""
    path = Path(source)
    if path.is_dir():
        return path
    text = str(source)
    if path.exists() or not _HUB_ID.match(text):
        raise UserError(f"{source}: no checkpoint folder there, and it is not a Hub id (owner/name)")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    patterns = ["*.json", "*.model", "*.txt", "*.jinja", "*.safetensors", "mm_projector.bin"]
    try:  # PyTorch .bin weights only where a release has no safetensors (many carry both)
        if not any(f.endswith(".safetensors") for f in HfApi().list_repo_files(text)):
            patterns.append("*.bin")
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError):
        patterns.append("*.bin")  # offline: whatever the cache holds
    try:
        folder = snapshot_download(text, allow_patterns=patterns)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        raise UserError(f"{text}: could not download the checkpoint from the Hub ({err})") from None
    return Path(folder)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: file not found; a LLaVA checkpoint folder holds config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def _is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not Path(text).exists()


def _basename_key(name: str) -> str:
    """``/some/path/Meta-Llama-3.1-8B-Instruct`` and ``meta-llama/Llama-3.1-8B-Instruct`` -> one key."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    return base.removeprefix("meta-")


def _infer_id(kind: str, hint: str | None, candidates: dict[str, str]) -> str | None:
    """The registry id whose Hub id names the same checkpoint as ``hint`` (None: no single match)."""
    if not hint:
        return None
    key = _basename_key(hint)
    matches = [rid for rid, hf_id in candidates.items() if _basename_key(hf_id) == key]
    return matches[0] if len(matches) == 1 else None


def _llm_candidates() -> dict[str, str]:
    return {llm_id: get_llm(llm_id).hf_id for llm_id in list_llms()}


def _vision_candidates() -> dict[str, str]:
    return {vision_id: get_vision(vision_id).hf_id for vision_id in list_visions()}


def _checked_id(kind: str, given: str, valid: list[str]) -> str:
    if given not in valid:
        raise UnknownBackboneError(kind, given, valid)
    return given


def _agreeing_id(
    kind: str, given: str | None, hint: str | None, candidates: dict[str, str], config_path: Path, key: str
) -> str | None:
    """The id the user gave (it must not contradict the one ``hint`` names), else the one ``hint`` names."""
    named = _infer_id(kind, hint, candidates)
    if not given:
        return named
    _checked_id(kind, given, list(candidates))
    if named is not None and named != given:
        raise UserError(
            f"{config_path}: {key} {hint!r} is {named}, not the {given} the import was told it is"
        )
    return given


def _check_s2(expected: bool | None, scales: tuple[int, ...] | None, config_path: Path) -> None:
    if expected is not None and bool(scales) != expected:
        found = f"S2 at {list(scales)}" if scales else "no S2"
        raise UserError(
            f"{config_path}: s2 / s2_scales say {found}, but the import was told s2 is {expected}"
        )


# ---------------------------------------------------------------------------------------------- weights
def _weight_files(folder: Path) -> list[Path]:
    """The weight files of a release: its safetensors (else its PyTorch ``.bin`` shards), and a
    pretrain release's ``mm_projector.bin``; ``training_args.bin`` and the like are not weights."""
    files = sorted(p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern))
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    pytorch = [p for p in files if p.suffix == ".bin" and p.name.startswith("pytorch_model")]
    projector = [p for p in files if p.name == "mm_projector.bin"]
    return (safetensors or pytorch) + projector


def _index_tensors(files: list[Path]) -> dict[str, _Tensor]:
    """Every tensor name in ``files`` -> where it lives (headers only; nothing is loaded)."""
    from safetensors import safe_open

    tensors: dict[str, _Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                keys = list(handle.keys())
        else:
            keys = list(_load_bin(file))
        for key in keys:
            tensors[key] = _Tensor(file, key)
    return tensors


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several kinds for a corrupt or foreign file
        raise UserError(f"{file}: not a readable PyTorch weight file ({err})") from None


def _read_tensors(file: Path, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            for key in keys:
                yield key, handle.get_tensor(key)
    else:
        state = _load_bin(file)
        for key in keys:
            yield key, state[key]


def _target_key(key: str, file: Path) -> str | None:
    """Our name for an original-format tensor (None: a derived buffer to skip)."""
    if key.endswith(_DERIVED_BUFFERS):
        return None
    for index, layer in (("0", "linear_1"), ("2", "linear_2")):
        prefix = f"model.mm_projector.{index}."
        if key.startswith(prefix):
            return f"model.multi_modal_projector.{layer}.{key.removeprefix(prefix)}"
    if key.startswith("model.mm_projector."):
        raise UserError(f"{file}: tensor {key} is not part of an {SUPPORTED_PROJECTOR} projector")
    if key.startswith("model.vision_tower.vision_tower."):
        return "model.vision_tower." + key.removeprefix("model.vision_tower.vision_tower.")
    if key.startswith(("model.image_newline", "model.vision_resampler")):
        raise UserError(
            f"{file}: tensor {key} belongs to LLaVA-NeXT's tiling, which transformers' LLaVA cannot hold"
        )
    if key.startswith("lm_head."):
        return key
    if key.startswith("model."):
        return "model.language_model." + key.removeprefix("model.")
    raise UserError(f"{file}: tensor {key} is not a key of the LLaVA format (model.*, lm_head.*)")


# ---------------------------------------------------------------------------------------------- import
@dataclass(frozen=True)
class ImportOptions:
    """What the user may say about a checkpoint that the checkpoint itself does not."""

    llm_id: str | None = None
    vision_id: str | None = None
    vision_tower: str | None = None
    llm_base: str | None = None
    template: str | None = None
    dtype: str | None = None
    expect_s2: bool | None = None  # what a study says; a checkpoint that disagrees is refused


def import_checkpoint(
    source: str | Path, out_dir: str | Path, options: ImportOptions | None = None
) -> BundleMeta:
    """Convert the checkpoint at ``source`` (folder or Hub id) into a bundle at ``out_dir``."""
    options = options or ImportOptions()
    folder = resolve_checkpoint(source)
    config = _read_json(folder / "config.json")
    if "mm_vision_tower" in config or config.get("model_type") in ORIGINAL_TEXT_TYPES:
        meta = _import_original(str(source), folder, config, Path(out_dir), options)
    elif config.get("model_type") == "llava" and "text_config" in config:
        meta = _import_native(str(source), folder, config, Path(out_dir), options)
    else:
        raise UserError(
            f"{folder / 'config.json'}: model_type {config.get('model_type')!r} is neither an original LLaVA "
            f"checkpoint ({', '.join(k for k in ORIGINAL_TEXT_TYPES if k.islower())}, with mm_vision_tower) "
            "nor a transformers llava checkpoint"
        )
    logger.info(
        "imported %s -> %s (%s x %s, template %s)",
        source,
        out_dir,
        meta.llm_id,
        meta.vision_id,
        meta.template,
    )
    return meta


def _dtype(options: ImportOptions, config: dict[str, Any]) -> torch.dtype:
    name = options.dtype or config.get("torch_dtype") or config.get("dtype") or "float32"
    value = getattr(torch, str(name), None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"--dtype {name}: expected a torch dtype name such as bfloat16 or float32")
    return value


def _template_for(llm_id: str, options: ImportOptions) -> str:
    from llava_more.text import ORIGINAL_SUFFIX, get_template
    from llava_more.text.templates import ORIGINAL_SYSTEM_PROMPTS

    if options.template:
        return get_template(options.template).id
    base = get_llm(llm_id).template
    if base in ORIGINAL_SYSTEM_PROMPTS:
        return base + ORIGINAL_SUFFIX
    logger.warning("no published training prompt is known for %s; using the %s template", llm_id, base)
    return base


def _size_of(llm_id: str, text_config: PretrainedConfig) -> str:
    real = get_llm(llm_id).real
    same = all(getattr(text_config, k, None) == real[k] for k in ("hidden_size", "num_hidden_layers"))
    return "real" if same else "tiny"


def _prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, template_id: str, where: Path
) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer configured for the template; its markers must already be there."""
    from llava_more.text import get_template
    from llava_more.text.tokenizer import apply_template

    template = get_template(template_id)
    vocab = tokenizer.get_vocab()
    missing = [t for t in template.special_tokens if t not in vocab]
    if missing:
        raise UserError(
            f"{where}: the tokenizer has no {', '.join(missing)}, which the {template_id} chat template "
            "needs; the checkpoint is not of that LLM (pass --llm or --template)"
        )
    return apply_template(tokenizer, template_id)


def _check_own_template(
    base: PreTrainedTokenizerBase, tokenizer: PreTrainedTokenizerBase, template_id: str
) -> None:
    """Warn when the checkpoint tokenizer's own chat template renders a prompt differently from ours.

    LLaVA-MORE's Llama-3.1, R1 and Gemma-2 checkpoints were trained and evaluated through their
    tokenizer's own template, so the two must agree for the prompts to be the trained ones.
    """
    from llava_more.text import IMAGE_TOKEN, get_template
    from llava_more.text.encode import generation_prompt

    own = getattr(base, "chat_template", None)
    if not own or not template_id.startswith(("llama3.1", "deepseek_r1", "gemma2")):
        return
    template = get_template(template_id)
    question = "What is shown?"
    messages = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"}]
    if template.default_system is not None:
        system = template.default_system
        if template_id.startswith("llama3.1"):  # its template writes the date lines itself
            system = system.split("\n\n", 1)[-1]
        messages.insert(0, {"role": "system", "content": system})
    try:
        theirs = base.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # a foreign Jinja template can fail in many ways
        logger.warning("the checkpoint's own chat template could not render a prompt (%s)", err)
        return
    ours = generation_prompt(tokenizer, template_id, question, has_image=True)
    if theirs != ours:
        logger.warning(
            "the checkpoint's own chat template renders %r where %s renders %r; prompts differ from training",
            theirs[:300], template_id, ours[:300],
        )  # fmt: skip


def _vision_source(config: dict[str, Any], config_path: Path, options: ImportOptions) -> tuple[str, str]:
    """(registry vision id, where the tower's config/weights/processor come from)."""
    named = options.vision_tower or config.get("mm_vision_tower") or config.get("vision_tower")
    if not named:
        raise UserError(f"{config_path}: no mm_vision_tower; pass --vision-tower PATH_OR_HUB_ID")
    vision_id = _agreeing_id(
        "vision encoder", options.vision_id, named, _vision_candidates(), config_path, "mm_vision_tower"
    )
    if vision_id is None:
        raise UserError(
            f"{config_path}: mm_vision_tower {named!r} matches none of the known encoders by name; "
            f"pass --vision (one of {', '.join(list_visions())})"
        )
    if Path(named).is_dir() or _is_hub_id(named):
        return vision_id, named
    # A path on the machine that trained it: the encoder's own Hub id stands in for it.
    hub_id = get_vision(vision_id).hf_id
    logger.info("mm_vision_tower %s is not here; using %s", named, hub_id)
    return vision_id, hub_id


def _tower_config(tower_source: str, spec: VisionSpec) -> PretrainedConfig:
    try:
        config = AutoConfig.from_pretrained(tower_source)
    except (OSError, ValueError) as err:
        raise UserError(f"{tower_source}: could not read the vision tower's config ({err})") from None
    config = getattr(config, "vision_config", config)  # a full CLIP/SigLIP checkpoint holds both towers
    if config.model_type != spec.family:
        raise UserError(
            f"{tower_source}: the vision tower is a {config.model_type}, not the {spec.family} of {spec.id}; "
            "pass --vision with the right encoder id"
        )
    return config


def _s2_scales(
    config: dict[str, Any], config_path: Path, spec: VisionSpec, base: int
) -> tuple[int, ...] | None:
    if not config.get("s2"):
        return None
    if spec.family not in _S2_FAMILIES:
        logger.warning(
            "%s: s2 is set, but the original code runs %s towers without S2; so does this import",
            config_path,
            spec.family,
        )
        return None
    raw = config.get("s2_scales", "336,672,1008")
    try:
        scales = sorted(int(s) for s in (raw.split(",") if isinstance(raw, str) else raw))
    except (TypeError, ValueError):
        raise UserError(f"{config_path}: s2_scales {raw!r} is not a list of pixel sizes") from None
    try:
        return validate_s2_scales(scales, base, spec.id)
    except UserError as err:
        raise UserError(f"{config_path}: s2_scales {raw!r}: {err}") from None


def _image_processor(tower_source: str, spec: VisionSpec, size: str, scales: tuple[int, ...] | None) -> Any:
    """The tower's own preprocessing (as the original code loaded it), resized to the largest S2 scale."""
    try:
        processor = AutoImageProcessor.from_pretrained(tower_source)
    except (OSError, ValueError):
        logger.warning("%s has no image processor config; using the %s recipe", tower_source, spec.id)
        return spec.image_processor(size, scales)
    if not scales:
        return processor
    side = scales[-1]
    changes: dict[str, Any] = {"crop_size": {"height": side, "width": side}}
    if getattr(processor, "do_center_crop", False):
        changes["size"] = {"shortest_edge": side}
    else:
        changes["size"] = {"height": side, "width": side}
    return type(processor).from_dict({**processor.to_dict(), **changes})


def _input_side(processor: Any) -> int:
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop is not None:
        return int(crop["height"])
    size = processor.size
    return int(size.get("height") or size.get("shortest_edge"))


def _import_original(
    source: str, folder: Path, config: dict[str, Any], out_dir: Path, options: ImportOptions
) -> BundleMeta:
    config_path = folder / "config.json"
    text_type = ORIGINAL_TEXT_TYPES.get(config.get("model_type", "")) or next(
        (ORIGINAL_TEXT_TYPES[a] for a in config.get("architectures") or [] if a in ORIGINAL_TEXT_TYPES), None
    )
    if text_type is None:
        raise UserError(
            f"{config_path}: model_type {config.get('model_type')!r} / architectures "
            f"{config.get('architectures')} name no LLM this import maps (Llama, Gemma-2, Phi-3)"
        )
    projector = config.get("mm_projector_type", "linear")
    if projector != SUPPORTED_PROJECTOR:
        raise UserError(
            f"{config_path}: mm_projector_type {projector!r} cannot be mapped exactly; only "
            f"{SUPPORTED_PROJECTOR} (LLaVA-1.5's two-layer MLP) is what transformers' LLaVA holds"
        )
    aspect = config.get("image_aspect_ratio", "square")
    if aspect not in ("pad", "square"):
        raise UserError(
            f"{config_path}: image_aspect_ratio {aspect!r} (LLaVA-NeXT tiling) cannot be mapped; "
            "only pad and square are"
        )
    if config.get("mm_use_im_start_end"):
        raise UserError(f"{config_path}: mm_use_im_start_end true (image start/end tokens) cannot be mapped")
    feature = config.get("mm_vision_select_feature", "patch")
    if feature not in ("patch", "cls_patch"):
        raise UserError(f"{config_path}: mm_vision_select_feature {feature!r}: expected patch or cls_patch")

    text_fields = {k: v for k, v in config.items() if k not in _LLAVA_FIELDS}
    text_config = CONFIG_MAPPING[text_type].from_dict(text_fields)
    llm_id = _agreeing_id(
        "LLM", options.llm_id, config.get("_name_or_path"), _llm_candidates(), config_path, "_name_or_path"
    )
    if llm_id is None:
        raise UserError(
            f"{config_path}: _name_or_path {config.get('_name_or_path')!r} names none of the known LLMs; "
            f"pass --llm (one of {', '.join(list_llms())})"
        )
    if get_llm(llm_id).family != text_type:
        raise UserError(
            f"{config_path}: a {text_type} checkpoint, but --llm {llm_id} is a {get_llm(llm_id).family}"
        )
    size = _size_of(llm_id, text_config)
    dtype = _dtype(options, config)

    vision_id, tower_source = _vision_source(config, config_path, options)
    spec = get_vision(vision_id)
    vision_config = _tower_config(tower_source, spec)
    processor = _image_processor(tower_source, spec, size, None)
    base_side = _input_side(processor)
    scales = _s2_scales(config, config_path, spec, base_side)
    if scales:
        processor = _image_processor(tower_source, spec, size, scales)
    _check_s2(options.expect_s2, scales, config_path)
    if feature == "cls_patch" and scales:
        raise UserError(f"{config_path}: mm_vision_select_feature cls_patch with S2 cannot be mapped")
    drop = spec.num_prefix_tokens if feature == "patch" else 0
    tokens = (base_side // vision_config.patch_size) ** 2 + (spec.num_prefix_tokens - drop)
    expected_hidden = vision_config.hidden_size * (len(scales) if scales else 1)
    if "mm_hidden_size" in config and config["mm_hidden_size"] != expected_hidden:
        raise UserError(
            f"{config_path}: mm_hidden_size {config['mm_hidden_size']} disagrees with the tower "
            f"({vision_config.hidden_size} channels x {len(scales) if scales else 1} scale(s) = {expected_hidden})"
        )

    own = _index_tensors(_weight_files(folder))
    if not own:
        raise UserError(f"{folder}: no weight files (*.safetensors, pytorch_model*.bin, mm_projector.bin)")
    tensors = dict(own)
    base_folder = folder
    if not any(k.startswith(("model.embed_tokens.", "model.layers.")) for k in own):
        base = options.llm_base or _existing_base(config) or get_llm(llm_id).hf_id
        logger.info("%s holds no LLM weights (a pretrain release); the LLM comes from %s", folder, base)
        base_folder = resolve_checkpoint(base)
        for key, where in _index_tensors(_weight_files(base_folder)).items():
            tensors.setdefault(key, where)

    template_id = _template_for(llm_id, options)
    tokenizer_folder = folder if any((folder / f).is_file() for f in _TOKENIZER_FILES) else base_folder
    base_tokenizer = _load_tokenizer(tokenizer_folder)
    tokenizer = _prepare_tokenizer(base_tokenizer, template_id, tokenizer_folder)
    _check_own_template(base_tokenizer, tokenizer, template_id)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    checkpoint_vocab = text_config.vocab_size

    config_out = llava_config(
        text_config,
        vision_config,
        dataclasses.replace(spec, prefix_tokens=drop),
        size=size,
        s2_scales=scales,
        image_token_id=image_token_id,
        lm_head_bias=False,
    )
    config_out.vision_feature_layer = int(config.get("mm_vision_select_layer", -2))
    config_out.image_seq_length = tokens
    if isinstance(config_out, LlavaMoreConfig) and scales:
        config_out.s2_antialias = False  # s2wrapper's plain bicubic resize
    with no_init_weights():
        model = AutoModelForImageTextToText.from_config(config_out, dtype=dtype)

    tower_in_checkpoint = any(k.startswith("model.vision_tower.vision_tower.") for k in tensors)
    tied = bool(text_config.tie_word_embeddings)
    loaded = _load_weights(model, tensors, tied=tied)
    if not tower_in_checkpoint:
        tower = spec.model_class.from_pretrained(tower_source, dtype=dtype)
        model.model.vision_tower.load_state_dict(tower.state_dict())
        loaded |= {"model.vision_tower." + k for k in tower.state_dict()}
    _check_complete(model, loaded, _describe_files(folder), tie=tied)
    _fit_vocabulary(model, tokenizer, checkpoint_vocab)
    model.config.image_token_id = image_token_id
    set_generation_tokens(model, tokenizer, _stop_tokens(template_id))

    meta = BundleMeta(
        llm_id=llm_id,
        vision_id=vision_id,
        size=size,
        s2_scales=list(scales) if scales else None,
        template=template_id,
        image_tokens=tokens,
        image_aspect_ratio=aspect,
        source=source,
    )
    save_bundle(out_dir, model, tokenizer, processor, meta)
    return meta


def _existing_base(config: dict[str, Any]) -> str | None:
    """The pretrain release's ``_name_or_path`` when it names a folder here or a Hub id."""
    name = config.get("_name_or_path")
    if name and (Path(name).is_dir() or _is_hub_id(name)):
        return name
    return None


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"{folder}: could not load the tokenizer ({err})") from None


def _stop_tokens(template_id: str) -> tuple[str, ...]:
    from llava_more.text import get_template

    return get_template(template_id).stop_tokens


def _describe_files(folder: Path) -> str:
    index = sorted(folder.glob("*.index.json"))
    if index:
        return str(index[0])
    files = _weight_files(folder)
    return ", ".join(str(f) for f in files) if files else str(folder)


def _load_weights(
    model: LlavaForConditionalGeneration, tensors: dict[str, _Tensor], *, tied: bool
) -> set[str]:
    """Copy every mapped tensor into ``model`` (one file at a time), checking names and shapes.

    With tied embeddings a saved ``lm_head.weight`` must equal the embeddings it is tied to.
    """
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for key, where in tensors.items():
        target = _target_key(key, where.file)
        if target is None:
            continue
        if target not in expected:
            raise UserError(f"{where.file}: tensor {key} has no place in the model its config.json describes")
        by_file.setdefault(where.file, []).append((key, target))
    loaded: set[str] = set()
    head: tuple[Path, torch.Tensor] | None = None
    for file, pairs in by_file.items():
        names = dict(pairs)
        part: dict[str, torch.Tensor] = {}
        for key, tensor in _read_tensors(file, list(names)):
            target = names[key]
            if tuple(tensor.shape) != expected[target]:
                raise UserError(
                    f"{file}: tensor {key} has shape {list(tensor.shape)}, but the model config.json "
                    f"describes needs {list(expected[target])} for it"
                )
            if tied and target == "lm_head.weight":
                head = (file, tensor)
                continue
            part[target] = tensor
        model.load_state_dict(part, strict=False)
        loaded |= set(part)
    if head is not None:
        embeddings = model.get_input_embeddings().weight
        if not torch.equal(head[1].to(embeddings.dtype), embeddings.detach()):
            raise UserError(
                f"{head[0]}: tensor lm_head.weight differs from model.embed_tokens.weight, but config.json "
                "ties them (tie_word_embeddings)"
            )
    return loaded


def _check_complete(model: LlavaForConditionalGeneration, loaded: set[str], where: str, *, tie: bool) -> None:
    missing = [
        name for name in model.state_dict() if name not in loaded and not (tie and name == "lm_head.weight")
    ]
    if missing:
        original = _original_name(missing[0])
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{where}: no tensor {original}{more}; the checkpoint is incomplete")
    if tie:
        model.tie_weights()


def _original_name(name: str) -> str:
    """Our parameter name as the original format spells it (for messages)."""
    if name.startswith("model.multi_modal_projector.linear_1."):
        return "model.mm_projector.0." + name.rsplit(".", 1)[-1]
    if name.startswith("model.multi_modal_projector.linear_2."):
        return "model.mm_projector.2." + name.rsplit(".", 1)[-1]
    if name.startswith("model.vision_tower."):
        return "model.vision_tower.vision_tower." + name.removeprefix("model.vision_tower.")
    if name.startswith("model.language_model."):
        return "model." + name.removeprefix("model.language_model.")
    return name


def _fit_vocabulary(
    model: LlavaForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, checkpoint_vocab: int
) -> None:
    """Grow the embeddings to the tokenizer when ``<image>`` (or a pad) did not fit in the checkpoint's rows.

    New rows are zero and are suppressed in generation, so answers and the logits of every original
    token are the checkpoint's own; where the checkpoint has spare rows, no row is added at all.
    """
    size = len(tokenizer)
    if size <= checkpoint_vocab:
        return
    model.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[checkpoint_vocab:] = 0
        model.get_output_embeddings().weight[checkpoint_vocab:] = 0
    model.generation_config.suppress_tokens = list(range(checkpoint_vocab, size))


# ---------------------------------------------------------------------------------------------- native
def _native_vision_id(vision_config: PretrainedConfig, options: ImportOptions, config_path: Path) -> str:
    if options.vision_id:
        return _checked_id("vision encoder", options.vision_id, list_visions())
    candidates = [v for v in list_visions() if get_vision(v).family == vision_config.model_type]
    exact = [
        v
        for v in candidates
        if get_vision(v).real["hidden_size"] == vision_config.hidden_size
        and get_vision(v).real["image_size"] == vision_config.image_size
    ]
    for group in (exact, candidates):
        if len(group) == 1:
            return group[0]
    raise UserError(
        f"{config_path}: cannot tell which vision encoder this {vision_config.model_type} tower is; pass --vision"
    )


def _import_native(
    source: str, folder: Path, config: dict[str, Any], out_dir: Path, options: ImportOptions
) -> BundleMeta:
    config_path = folder / "config.json"
    dtype = _dtype(options, config.get("text_config", {}) | config)
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    text_config, vision_config = model.config.text_config, model.config.vision_config
    strategy = model.config.vision_feature_select_strategy
    if not isinstance(model.config.vision_feature_layer, int):
        raise UserError(
            f"{config_path}: vision_feature_layer {model.config.vision_feature_layer} (several layers) cannot be mapped"
        )
    llm_id = (
        _checked_id("LLM", options.llm_id, list_llms())
        if options.llm_id
        else _infer_id("LLM", getattr(text_config, "_name_or_path", None), _llm_candidates())
    )
    if llm_id is None:
        raise UserError(f"{config_path}: text_config names none of the known LLMs; pass --llm")
    vision_id = _native_vision_id(vision_config, options, config_path)
    _check_s2(options.expect_s2, None, config_path)
    template_id = _template_for(llm_id, options)
    tokenizer = _prepare_tokenizer(_load_tokenizer(folder), template_id, folder)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id != model.config.image_token_id:
        raise UserError(
            f"{config_path}: image_token_index {model.config.image_token_id} is not the tokenizer's "
            f"<image> ({image_token_id})"
        )
    processor = AutoImageProcessor.from_pretrained(folder)
    kept_prefix = get_vision(vision_id).num_prefix_tokens - (1 if strategy == "default" else 0)
    tokens = (_input_side(processor) // vision_config.patch_size) ** 2 + kept_prefix
    if model.config.image_seq_length not in (None, tokens):
        raise UserError(
            f"{config_path}: image_seq_length {model.config.image_seq_length} disagrees with the tower "
            f"({tokens} features per image for strategy {strategy!r})"
        )
    _fit_vocabulary(model, tokenizer, text_config.vocab_size)
    set_generation_tokens(model, tokenizer, _stop_tokens(template_id))
    meta = BundleMeta(
        llm_id=llm_id,
        vision_id=vision_id,
        size=_size_of(llm_id, text_config),
        s2_scales=None,
        template=template_id,
        image_tokens=tokens,
        image_aspect_ratio="pad",  # LLaVA-1.5 was trained and evaluated with padded images
        source=source,
    )
    save_bundle(out_dir, model, tokenizer, processor, meta)
    return meta
