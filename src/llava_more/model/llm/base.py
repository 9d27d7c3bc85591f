"""What llava-more knows about one LLM backbone: its Hugging Face id, chat template and architecture.

A spec holds the published architecture as plain data (so shapes and parameter counts can be
checked without downloading anything) and a tiny twin of it: the same transformers class with a
few small layers, keeping the family's quirks (Gemma-2's wide heads and soft-capping, Phi's partial
rotary embeddings, tied embeddings), for the demo pipeline and the tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llava_more.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

SIZES = ("real", "tiny")

# The tiny twin's trunk; a family adds its quirks on top. Small enough that a forward and backward
# pass of the whole LLaVA model takes milliseconds on one CPU core.
TINY_TRUNK: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    # The real configs' 0.02 suits hidden sizes in the thousands; at 64 it leaves the attention logits
    # near zero, and the random tiny LLMs took far longer to learn to read the image (README, "What
    # the demo learns"). About 1/sqrt(hidden) instead.
    "initializer_range": 0.1,
}

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


@dataclass(frozen=True, eq=False)
class LLMSpec:
    """One LLM backbone.

    ``family`` is the transformers ``model_type`` of the text model, ``config_class_name`` its
    transformers config class. ``real`` holds the published
    config values, ``tiny`` the tiny twin's overrides (merged over the real values and
    ``TINY_TRUNK``). ``pad_token`` is the pad token the real tokenizer offers for this LLM (None:
    it has none and the text module's ``apply_template`` adds one); the text templates decide.
    ``lm_head_bias`` is true for LLMs whose output layer has a bias (Phi-2), which transformers'
    plain LLaVA head lacks.
    """

    id: str
    hf_id: str
    family: str
    template: str
    config_class_name: str
    real: dict[str, Any]
    tiny: dict[str, Any] = field(default_factory=dict)
    pad_token: str | None = None
    lm_head_bias: bool = False

    def config(self, size: str, vocab_size: int | None = None) -> PretrainedConfig:
        """The text config for ``size`` ("real" or "tiny"); ``vocab_size`` overrides the vocabulary."""
        if check_size(size) == "real":
            values = dict(self.real)
        else:
            # The twin keeps every real setting (activations, rope, tying, soft-capping) except sizes.
            values = {**self.real, **TINY_TRUNK, **self.tiny, "vocab_size": TINY_DEFAULT_VOCAB}
            # Real token ids do not exist in a tiny tokenizer: the caller sets them from its own.
            values.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
        if vocab_size is not None:
            values["vocab_size"] = vocab_size
        return self.config_class(**values)

    @property
    def config_class(self) -> type[PretrainedConfig]:
        return transformers_class(self.config_class_name)

    @property
    def tie_word_embeddings(self) -> bool:
        return bool(self.real.get("tie_word_embeddings", False))

    @property
    def final_logit_softcapping(self) -> float | None:
        return self.real.get("final_logit_softcapping")
