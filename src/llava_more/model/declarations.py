"""Backbones declared in params.yaml (``backbones:``), beside the built-in registry.

```yaml
backbones:
  llm:
    qwen2.5-0.5b:
      hf_id: Qwen/Qwen2.5-0.5B-Instruct   # or path: a local checkpoint folder (relative to params.yaml)
      template: null                       # optional: a built-in template id (default: the tokenizer's own)
      pad_token: null                      # optional
      system_prompt: null                  # optional: a default system prompt
  vision:
    vit-b-16:
      hf_id: google/vit-base-patch16-224
      feature_layer: -2                    # optional: the hidden layer the projector reads
      prefix_tokens: null                  # optional: tokens before the patches to drop (default: counted)
      image_size: null                     # optional: input pixels (default: the image processor's)
```

A declared entry is an ``LLMSpec`` / ``VisionSpec`` like the built-ins; everything not given is read
from the checkpoint's own ``config.json``, tokenizer and image-processor files when first needed.
``config.schema.parse_params`` calls ``declare`` with the section; a command that never loads
params.yaml (``init-model``, ``warm-vision``) gets the declarations of ``params.yaml`` in the working
directory (or ``$LLAVA_MORE_PARAMS``) the first time it asks for an id the registry does not know.
Parsing stays torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llava_more.errors import ConfigError
from llava_more.model.llm.base import LLMSpec
from llava_more.model.vision.base import VisionSpec

PARAMS_ENV = "LLAVA_MORE_PARAMS"
SECTION = "backbones"
LLM_KEYS = ("hf_id", "path", "template", "pad_token", "system_prompt")
VISION_KEYS = ("hf_id", "path", "feature_layer", "prefix_tokens", "image_size")


@dataclass
class Declarations:
    llms: dict[str, LLMSpec] = field(default_factory=dict)
    visions: dict[str, VisionSpec] = field(default_factory=dict)
    loaded: bool = False  # declarations were given (by params.yaml or a lazy read)


_DECLARED = Declarations()


def _checked(raw: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of backbone settings, got {raw!r}")
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; allowed keys here: {', '.join(allowed)}")
    return dict(raw)


def _checkpoint(raw: dict[str, Any], where: str, base_dir: Path) -> dict[str, str | None]:
    given = [key for key in ("hf_id", "path") if raw.get(key) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of hf_id (a Hugging Face id) or path (a local folder)")
    value = raw[given[0]]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{given[0]}: expected a non-empty string, got {value!r}")
    if given[0] == "hf_id":
        return {"hf_id": value, "path": None}
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    if not path.is_dir():
        raise ConfigError(f"{where}.path: {path} is not a folder; point it at the checkpoint's folder")
    return {"hf_id": None, "path": str(path)}


def _optional(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = raw.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def parse_backbones(raw: Any, base_dir: Path = Path(".")) -> Declarations:
    """The ``backbones`` section as specs; ``ConfigError`` naming the key on any problem."""
    from llava_more.model.llm import builtin_llms
    from llava_more.model.vision import builtin_visions
    from llava_more.text.templates import NO_SYSTEM_SUFFIX, TEMPLATE_IDS

    section = _checked(raw or {}, SECTION, ("llm", "vision"))
    out = Declarations(loaded=True)
    for backbone_id, body in _checked(
        section.get("llm") or {}, f"{SECTION}.llm", tuple(section.get("llm") or ())
    ).items():
        where = f"{SECTION}.llm.{backbone_id}"
        if backbone_id in builtin_llms():
            raise ConfigError(f"{where}: {backbone_id!r} is a built-in LLM id; declare it under another name")
        body = _checked(body, where, LLM_KEYS)
        template = _optional(body, "template", str, where)
        if template is not None and template.removesuffix(NO_SYSTEM_SUFFIX) not in TEMPLATE_IDS:
            raise ConfigError(
                f"{where}.template: {template!r} is not a built-in template ({', '.join(TEMPLATE_IDS)}); "
                "leave it out to use the tokenizer's own chat template"
            )
        out.llms[str(backbone_id)] = LLMSpec(
            id=str(backbone_id),
            **_checkpoint(body, where, base_dir),
            template=template,
            pad_token=_optional(body, "pad_token", str, where),
            system_prompt=_optional(body, "system_prompt", str, where),
            declared=True,
        )
    for backbone_id, body in _checked(
        section.get("vision") or {}, f"{SECTION}.vision", tuple(section.get("vision") or ())
    ).items():
        where = f"{SECTION}.vision.{backbone_id}"
        if backbone_id in builtin_visions():
            raise ConfigError(
                f"{where}: {backbone_id!r} is a built-in encoder id; declare it under another name"
            )
        body = _checked(body, where, VISION_KEYS)
        prefix = _optional(body, "prefix_tokens", int, where)
        size = _optional(body, "image_size", int, where)
        if (prefix is not None and prefix < 0) or (size is not None and size <= 0):
            raise ConfigError(f"{where}: prefix_tokens must be >= 0 and image_size positive")
        layer = _optional(body, "feature_layer", int, where)
        out.visions[str(backbone_id)] = VisionSpec(
            id=str(backbone_id),
            **_checkpoint(body, where, base_dir),
            feature_layer=-2 if layer is None else layer,
            prefix_tokens=prefix,
            input_size=size,
            declared=True,
        )
    return out


def declare(raw: Any, base_dir: Path = Path(".")) -> Declarations:
    """Parse the ``backbones`` section and make it the declared set (replacing any earlier one)."""
    global _DECLARED
    _DECLARED = parse_backbones(raw, base_dir)
    return _DECLARED


def declared() -> Declarations:
    """The declared backbones; the first call without any reads ``params.yaml`` (``$LLAVA_MORE_PARAMS``)."""
    global _DECLARED
    if not _DECLARED.loaded:
        _DECLARED.loaded = True  # once, even if the file is missing or declares nothing
        path = Path(os.environ.get(PARAMS_ENV) or "params.yaml")
        if path.is_file():
            try:
                raw = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not valid YAML: {err}") from None
            if isinstance(raw, Mapping) and raw.get(SECTION):
                _DECLARED = parse_backbones(raw[SECTION], path.resolve().parent)
    return _DECLARED
