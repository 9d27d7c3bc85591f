"""What llava-more knows about one LLM backbone: where its checkpoint is, its chat template, its architecture.

Every LLM, built-in or declared in params.yaml (``backbones.llm``), is one ``LLMSpec``: a checkpoint
(a Hugging Face id or a local folder) plus the few choices llava-more makes about it (chat template,
pad token, system prompt). Its architecture is the checkpoint's own ``config.json``: a built-in entry
carries those values (so shapes and parameter counts are known without downloading anything), a
declared one reads them from the checkpoint when first needed.

Tiny twins are derived from the real config by one rule for every family (``tiny_text_values``): the
same transformers class with a few small layers, keeping what makes the family itself (grouped-query
attention or not, head widths that differ from hidden / heads, soft-capping, partial rotary
embeddings, tied embeddings, the pattern of sliding and full attention layers), for the demo pipeline
and the tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from llava_more.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

SIZES = ("real", "tiny")

# The tiny twin's trunk. Small enough that a forward and backward pass of the whole LLaVA model takes
# milliseconds on one CPU core.
TINY_TRUNK: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    # The real configs' 0.02 suits hidden sizes in the thousands; at 64 it leaves the attention logits
    # near zero, and the random tiny LLMs took far longer to learn to read the image (README, "What
    # the demo learns"). About 1/sqrt(hidden) instead.
    "initializer_range": 0.1,
}
# Key/value heads of a twin whose family shares them across query heads (grouped-query attention).
TINY_GQA_KV_HEADS = 2
# Head width of a twin whose family's heads are not hidden / heads wide (Gemma-2's 256-d heads).
TINY_WIDE_HEAD = 32
# A sliding window shorter than a demo sample, so the twin exercises it.
TINY_SLIDING_WINDOW = 64

# Used only when no tokenizer is given (shape checks); the pipeline passes the tokenizer's size.
TINY_DEFAULT_VOCAB = 512


def transformers_class(name: str) -> Any:
    """A transformers class by name, imported on first use: the registries stay torch-free, so
    validating params.yaml does not pay for importing torch."""
    return getattr(importlib.import_module("transformers"), name)


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ConfigError(f"unknown model size {size!r}; valid sizes: {', '.join(SIZES)}")
    return size


def config_from_values(values: dict[str, Any]) -> PretrainedConfig:
    """A transformers config from ``config.json`` values (their ``model_type`` picks the class)."""
    from transformers import AutoConfig

    values = dict(values)
    try:
        return AutoConfig.for_model(values.pop("model_type"), **values)
    except KeyError as err:
        raise ConfigError(
            f"config values without a known model_type ({err}); cannot build the model"
        ) from None


def read_checkpoint_config(source: str, what: str) -> dict[str, Any]:
    """The ``config.json`` values of a checkpoint (a local folder, or a Hub id read through the HF cache)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source).to_dict()
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{what}: cannot read the config.json of {source!r} ({reason}); check backbones in params.yaml "
            "(path: a local checkpoint folder, hf_id: a Hugging Face id reachable from here)"
        ) from None


def _shrunk_layer_types(kinds: list[str], layers: int) -> list[str]:
    """The first ``layers`` kinds, with any kind the real model has but they miss put at the end."""
    chosen = list(kinds[:layers])
    missing = [k for k in dict.fromkeys(kinds) if k not in chosen]
    for offset, kind in enumerate(missing[:layers], start=1):
        chosen[-offset] = kind
    return chosen


def tiny_text_values(real: PretrainedConfig) -> dict[str, Any]:
    """The config values of ``real``'s tiny twin (same class, shrunk sizes, the family's quirks kept)."""
    values = real.to_dict()
    heads, hidden = real.num_attention_heads, real.hidden_size
    kv_heads = getattr(real, "num_key_value_heads", None) or heads
    tiny_heads, tiny_hidden = TINY_TRUNK["num_attention_heads"], TINY_TRUNK["hidden_size"]
    values.update(TINY_TRUNK)
    if "num_key_value_heads" in values:
        values["num_key_value_heads"] = TINY_GQA_KV_HEADS if kv_heads < heads else tiny_heads
    real_head = values.get("head_dim")
    tiny_head = tiny_hidden // tiny_heads
    if real_head is not None:
        tiny_head = tiny_head if real_head == hidden // heads else TINY_WIDE_HEAD
        values["head_dim"] = tiny_head
        if values.get("query_pre_attn_scalar") == real_head:
            values["query_pre_attn_scalar"] = tiny_head
    if isinstance(values.get("sliding_window"), int):
        values["sliding_window"] = min(values["sliding_window"], TINY_SLIDING_WINDOW)
    layers = TINY_TRUNK["num_hidden_layers"]
    if isinstance(values.get("layer_types"), list):
        values["layer_types"] = _shrunk_layer_types(values["layer_types"], layers)
    if isinstance(values.get("max_window_layers"), int):
        values["max_window_layers"] = min(values["max_window_layers"], layers)
    # Per-frequency rope factors (Phi-3's longrope) have one entry per rotary pair: shrink them too.
    rope = values.get("rope_parameters") or values.get("rope_scaling")
    if isinstance(rope, dict):
        partial = rope.get("partial_rotary_factor", values.get("partial_rotary_factor", 1.0)) or 1.0
        real_pairs = int((real_head or hidden // heads) * partial) // 2
        tiny_pairs = int(tiny_head * partial) // 2
        for key, factors in list(rope.items()):
            if isinstance(factors, list) and len(factors) == real_pairs:
                rope[key] = factors[:tiny_pairs]
    values["vocab_size"] = TINY_DEFAULT_VOCAB
    # Real token ids do not exist in a tiny tokenizer: the caller sets them from its own.
    values.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    for derived in ("_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype"):
        values.pop(derived, None)
    return values


@dataclass(frozen=True, eq=False)
class LLMSpec:
    """One LLM backbone.

    ``hf_id`` / ``path``: the checkpoint (a local ``path`` wins). ``template``: a built-in chat template
    id, or None for the checkpoint tokenizer's own chat template. ``pad_token``: the pad token the
    real tokenizer offers (None: the text module's ``apply_template`` picks or adds one).
    ``system_prompt``: a default system prompt for a tokenizer's own template (built-in templates carry
    theirs). ``checkpoint_config``: the checkpoint's ``config.json`` values when known without reading
    them (the built-ins); None reads them from the checkpoint. ``declared``: from params.yaml.
    """

    id: str
    hf_id: str | None = None
    path: str | None = None
    template: str | None = None
    pad_token: str | None = None
    system_prompt: str | None = None
    checkpoint_config: dict[str, Any] | None = None
    declared: bool = False

    @property
    def source(self) -> str:
        """Where the checkpoint (weights, config.json, tokenizer) is: the local path or the Hub id."""
        return self.path or self.hf_id or ""

    @cached_property
    def real(self) -> dict[str, Any]:
        """The checkpoint's ``config.json`` values (for an encoder: its vision part)."""
        if self.checkpoint_config is not None:
            return dict(self.checkpoint_config)
        values = read_checkpoint_config(self.source, f"LLM {self.id!r}")
        text = values.get("text_config")
        return dict(text) if isinstance(text, dict) and "model_type" in text else values

    @property
    def family(self) -> str:
        """The transformers ``model_type`` of the text model."""
        return self.real["model_type"]

    def config(self, size: str, vocab_size: int | None = None) -> PretrainedConfig:
        """The text config for ``size`` ("real" or "tiny"); ``vocab_size`` overrides the vocabulary."""
        real = config_from_values(self.real)
        if check_size(size) == "tiny":
            real = config_from_values({"model_type": self.family, **tiny_text_values(real)})
        if vocab_size is not None:
            real.vocab_size = vocab_size
        return real

    @property
    def config_class(self) -> type[PretrainedConfig]:
        return type(config_from_values(self.real))

    @property
    def tie_word_embeddings(self) -> bool:
        return bool(self.config("real").tie_word_embeddings)

    @property
    def final_logit_softcapping(self) -> float | None:
        return getattr(self.config("real"), "final_logit_softcapping", None)

    @cached_property
    def lm_head_bias(self) -> bool:
        """Whether the family's causal-LM head has a bias (Phi-2), found by building the tiny twin on ``meta``."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(self.config("tiny"))
        head = model.get_output_embeddings()
        return getattr(head, "bias", None) is not None
