"""The LLaVA model on transformers' own classes, plus our subclass for what plain LLaVA cannot express.

Ordinary pairs are plain ``LlavaForConditionalGeneration`` checkpoints (lmms-eval's ``llava_hf``
loads them as they are). ``LlavaMoreForConditionalGeneration`` (model type ``llava_more``) adds:

- S2 multi-scale features (the projector then takes ``len(scales)`` x the encoder's channels;
  ``s2_antialias`` false resizes to the smaller scales as the published S2 checkpoints were trained);
- any number of prefix tokens to drop (DINOv2 with registers: CLS + 4 registers), where plain
  LLaVA can only drop one;
- a biased LM head (Phi-2) and Gemma-2's final logit soft-capping, which the original LLMs apply
  and plain LLaVA's head does not.

Importing this module registers the subclass with ``AutoConfig``, ``AutoModel`` and
``AutoModelForImageTextToText``, so saved folders load without ``trust_remote_code``.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaModel,
)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast, LlavaPreTrainedModel

from llava_more.model.s2 import s2_features


@strict
class LlavaMoreConfig(LlavaConfig):
    """``LlavaConfig`` plus S2 scales, the prefix-token count and the LLM head's quirks.

    ``vision_feature_select_strategy`` stays "full": the model drops ``num_prefix_tokens`` itself.
    """

    model_type = "llava_more"

    s2_scales: list[int] | None = None
    s2_antialias: bool = True
    num_prefix_tokens: int = 1
    lm_head_bias: bool = False
    final_logit_softcapping: float | None = None

    @property
    def projector_in_features(self) -> int:
        return self.vision_config.hidden_size * (len(self.s2_scales) if self.s2_scales else 1)


class LlavaMoreProjector(nn.Module):
    """LLaVA's mlp2x_gelu projector with the input width S2 needs; same parameter names as transformers'."""

    def __init__(self, config: LlavaMoreConfig):
        super().__init__()
        text_hidden = config.text_config.hidden_size
        bias = config.multimodal_projector_bias
        self.linear_1 = nn.Linear(config.projector_in_features, text_hidden, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=bias)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class LlavaMoreModel(LlavaModel):
    config_class = LlavaMoreConfig

    def __init__(self, config: LlavaMoreConfig):
        LlavaPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaMoreProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Projected image features; ``pooler_output`` is one (tokens, hidden) tensor per image."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError("llava_more models take features from one vision layer (an int)")
        prefix = self.config.num_prefix_tokens
        if self.config.s2_scales:
            selected = s2_features(
                self.vision_tower,
                pixel_values,
                self.config.s2_scales,
                feature_layer=layer,
                num_prefix_tokens=prefix,
                antialias=self.config.s2_antialias,
            )
        else:
            outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
            selected = outputs.hidden_states[layer][:, prefix:]
        projected = self.multi_modal_projector(selected)
        return BaseModelOutputWithPooling(last_hidden_state=selected, pooler_output=list(projected))


class LlavaMoreForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = LlavaMoreConfig

    def __init__(self, config: LlavaMoreConfig):
        LlavaPreTrainedModel.__init__(self, config)
        self.model = LlavaMoreModel(config)
        self.lm_head = nn.Linear(
            config.text_config.hidden_size, config.text_config.vocab_size, bias=config.lm_head_bias
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ) -> LlavaCausalLMOutputWithPast:
        cap = self.config.final_logit_softcapping
        outputs = super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            # With soft-capping the loss must be taken on the capped logits, so it is computed here.
            labels=labels if cap is None else None,
            logits_to_keep=logits_to_keep,
            image_sizes=image_sizes,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        if cap is not None:
            outputs.logits = torch.tanh(outputs.logits / cap) * cap
            if labels is not None:
                outputs.loss = self.loss_function(
                    logits=outputs.logits,
                    labels=labels,
                    vocab_size=self.config.text_config.vocab_size,
                    **kwargs,
                )
        return outputs


def _register_with_auto_classes() -> None:
    AutoConfig.register(LlavaMoreConfig.model_type, LlavaMoreConfig, exist_ok=True)
    AutoModel.register(LlavaMoreConfig, LlavaMoreModel, exist_ok=True)
    AutoModelForImageTextToText.register(LlavaMoreConfig, LlavaMoreForConditionalGeneration, exist_ok=True)


_register_with_auto_classes()

__all__ = [
    "LlavaConfig",
    "LlavaForConditionalGeneration",
    "LlavaMoreConfig",
    "LlavaMoreForConditionalGeneration",
    "LlavaMoreModel",
]
