"""Chat templates of the LLMs in the study, as Jinja chat templates transformers can render.

Each template marks every assistant reply plus its end-of-turn token with ``{% generation %}``, so the
loss mask comes from the rendered text itself (character spans), never from hand-counted token offsets.
The Jinja sources live in ``chat_templates/*.jinja``; the per-LLM values (default system prompt, BOS,
end-of-turn token) are prepended to them as ``{% set %}`` lines so the one string saved with a tokenizer
is self-contained.

Every template id also exists without its default system prompt, as ``<id>+no-system`` (a record's own
system turn is still rendered). The demo study uses these: its tiny LLMs learn from scratch, and a
constant system prompt was about a fifth of every training sequence and slowed their learning.

Templates of the LLMs a published checkpoint was trained with also exist as ``<id>+original``: the same
format with the system prompt of the checkpoint's own training code (``ORIGINAL_SYSTEM_PROMPTS``), which
``llava-more import-model`` records in imported bundles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

from llava_more.errors import ConfigError

IMAGE_TOKEN = "<image>"
# Added to every tokenizer that has no pad token distinct from its EOS.
FALLBACK_PAD_TOKEN = "<pad>"

# LLaVA-MORE's Llama/Phi system prompt, in our own words.
VISION_ASSISTANT_SYSTEM = (
    "You are a helpful assistant for language and vision. You understand the visual content the user "
    "shares with you and help with a wide range of tasks using natural language."
)
# The classic Vicuna v1 system sentence, in our own words.
VICUNA_SYSTEM = (
    "A conversation between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed and polite answers to the user's questions."
)


@dataclass(frozen=True)
class ChatTemplate:
    """One LLM family's conversation format.

    ``jinja`` is the complete chat template (what ``tokenizer.chat_template`` is set to).
    ``bos_token`` is the BOS the render starts with (None: the family writes none).
    ``end_of_turn`` closes every assistant reply and is supervised with it; None for ``plain``, which
    uses the tokenizer's EOS. ``reply_prefix`` is text the template puts inside the supervised span
    before the reply (Vicuna's space after ``ASSISTANT:``). ``assistant_header`` is what a generation
    prompt ends with. ``special_tokens`` are the markers the render uses; each must be one token.
    """

    id: str
    jinja: str
    bos_token: str | None
    end_of_turn: str | None
    stop_tokens: tuple[str, ...]
    stop_strings: tuple[str, ...]
    default_system: str | None
    has_system_role: bool
    reply_prefix: str
    assistant_header: str
    pad_token: str | None
    special_tokens: tuple[str, ...]


def _jinja_literal(value: str | None) -> str:
    # A JSON string is also a valid Jinja string literal (same escapes).
    return "none" if value is None else json.dumps(value, ensure_ascii=False)


def _load_jinja(file_name: str, **variables: str | None) -> str:
    source = resources.files("llava_more.text").joinpath("chat_templates", file_name).read_text("utf-8")
    header = "".join(f"{{%- set {name} = {_jinja_literal(value)} -%}}\n" for name, value in variables.items())
    return header + source


def _llama3(template_id: str, pad_token: str | None) -> ChatTemplate:
    return ChatTemplate(
        id=template_id,
        jinja=_load_jinja("llama3.jinja", default_system=VISION_ASSISTANT_SYSTEM),
        bos_token="<|begin_of_text|>",
        end_of_turn="<|eot_id|>",
        stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
        stop_strings=(),
        default_system=VISION_ASSISTANT_SYSTEM,
        has_system_role=True,
        reply_prefix="",
        assistant_header="<|start_header_id|>assistant<|end_header_id|>\n\n",
        pad_token=pad_token,
        special_tokens=(
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|end_of_text|>",
        ),
    )


def _user_assistant(template_id: str, *, bos: str | None, end_of_turn: str, system: str) -> ChatTemplate:
    return ChatTemplate(
        id=template_id,
        jinja=_load_jinja(
            "user_assistant.jinja", default_system=system, bos=bos or "", end_of_turn=end_of_turn
        ),
        bos_token=bos,
        end_of_turn=end_of_turn,
        stop_tokens=(end_of_turn,),
        # A reply that runs on into a new turn is cut at the next speaker marker.
        stop_strings=("USER:",),
        default_system=system,
        has_system_role=True,
        reply_prefix=" ",
        assistant_header="ASSISTANT:",
        pad_token=None,
        special_tokens=tuple(t for t in (bos, end_of_turn) if t),
    )


def _build_registry() -> dict[str, ChatTemplate]:
    templates = [
        # Llama-3.1 reserves a pad token; Llama-3 has none (a <pad> is added).
        _llama3("llama3.1", pad_token="<|finetune_right_pad_id|>"),
        _llama3("llama3", pad_token=None),
        ChatTemplate(
            id="gemma2",
            jinja=_load_jinja("gemma2.jinja", default_system=None),
            bos_token="<bos>",
            end_of_turn="<end_of_turn>",
            stop_tokens=("<end_of_turn>", "<eos>"),
            stop_strings=(),
            default_system=None,
            has_system_role=False,
            reply_prefix="",
            assistant_header="<start_of_turn>model\n",
            pad_token="<pad>",
            special_tokens=("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
        ),
        ChatTemplate(
            id="phi4",
            jinja=_load_jinja("phi4.jinja", default_system=VISION_ASSISTANT_SYSTEM),
            bos_token=None,
            end_of_turn="<|end|>",
            stop_tokens=("<|end|>", "<|endoftext|>"),
            stop_strings=(),
            default_system=VISION_ASSISTANT_SYSTEM,
            has_system_role=True,
            reply_prefix="",
            assistant_header="<|assistant|>",
            pad_token="<|endoftext|>",
            special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
        ),
        ChatTemplate(
            id="deepseek_r1",
            # DeepSeek advises against a system prompt for the R1 distills; a record may still bring one.
            jinja=_load_jinja("deepseek_r1.jinja", default_system=None),
            bos_token="<｜begin▁of▁sentence｜>",
            end_of_turn="<｜end▁of▁sentence｜>",
            stop_tokens=("<｜end▁of▁sentence｜>",),
            stop_strings=(),
            default_system=None,
            has_system_role=True,
            reply_prefix="",
            # The newer upstream template also opens "<think>\n" here; the LLaVA data has no reasoning
            # traces, so training and generation both stop at the Assistant marker.
            assistant_header="<｜Assistant｜>",
            pad_token=None,
            special_tokens=(
                "<｜begin▁of▁sentence｜>",
                "<｜end▁of▁sentence｜>",
                "<｜User｜>",
                "<｜Assistant｜>",
            ),
        ),
        _user_assistant("vicuna_v1", bos="<s>", end_of_turn="</s>", system=VICUNA_SYSTEM),
        _user_assistant("phi2", bos=None, end_of_turn="<|endoftext|>", system=VICUNA_SYSTEM),
        ChatTemplate(
            id="plain",
            jinja=_load_jinja("plain.jinja"),
            bos_token=None,  # the tokenizer's own BOS, when it has one
            end_of_turn=None,  # the tokenizer's own EOS
            stop_tokens=(),
            stop_strings=(),
            default_system=None,
            has_system_role=False,
            reply_prefix="",
            assistant_header="",
            pad_token=None,
            special_tokens=(),
        ),
    ]
    return {t.id: t for t in templates}


@cache
def _registry() -> dict[str, ChatTemplate]:
    return _build_registry()


TEMPLATE_IDS: tuple[str, ...] = (
    "llama3.1",
    "llama3",
    "gemma2",
    "phi4",
    "vicuna_v1",
    "deepseek_r1",
    "phi2",
    "plain",
)


NO_SYSTEM_SUFFIX = "+no-system"
ORIGINAL_SUFFIX = "+original"

# The system prompts the published checkpoints were trained and evaluated with, verbatim (they are data
# of those checkpoints, not prose: a model answers best to the prompt it was trained on). LLaVA-MORE's
# Llama-3.1 and R1 checkpoints render it through their tokenizer's own chat template, which for
# Llama-3.1 puts its knowledge-date lines first; LLaVA-1.5 (Vicuna) and LLaVA++ (Llama-3) use LLaVA's
# Vicuna sentence; Gemma-2 has none.
_LLAVA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAVA_MORE_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
ORIGINAL_SYSTEM_PROMPTS: dict[str, str | None] = {
    "llama3.1": "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + _LLAVA_MORE_SYSTEM,
    "deepseek_r1": _LLAVA_MORE_SYSTEM,
    "phi4": "You are a helpful AI assistant.",
    "gemma2": None,
    "vicuna_v1": _LLAVA_SYSTEM,
    "llama3": _LLAVA_SYSTEM,
}


def get_template(template_id: str) -> ChatTemplate:
    """The chat template with this id (``<id>+no-system``: without its default system prompt);
    ``ConfigError`` listing the valid ids otherwise."""
    for suffix in (NO_SYSTEM_SUFFIX, ORIGINAL_SUFFIX):
        base_id = template_id.removesuffix(suffix)
        if base_id != template_id:
            break
    valid = (
        f"valid ids: {', '.join(TEMPLATE_IDS)} (each also as <id>{NO_SYSTEM_SUFFIX}; "
        f"{', '.join(ORIGINAL_SYSTEM_PROMPTS)} also as <id>{ORIGINAL_SUFFIX})"
    )
    try:
        template = _registry()[base_id]
    except KeyError:
        raise ConfigError(f"unknown chat template id {template_id!r}; {valid}") from None
    if base_id == template_id:
        return template
    if suffix == NO_SYSTEM_SUFFIX:
        return without_system(template)
    if base_id not in ORIGINAL_SYSTEM_PROMPTS:
        raise ConfigError(f"chat template {template_id!r}: no published checkpoint uses {base_id!r}; {valid}")
    return _with_default_system(template, ORIGINAL_SYSTEM_PROMPTS[base_id], template_id)


def without_system(template: ChatTemplate) -> ChatTemplate:
    """``template`` with no default system prompt (its id gets ``NO_SYSTEM_SUFFIX``)."""
    if template.id.endswith(NO_SYSTEM_SUFFIX):
        return template
    return _with_default_system(template, None, template.id + NO_SYSTEM_SUFFIX)


def _with_default_system(template: ChatTemplate, system: str | None, new_id: str) -> ChatTemplate:
    header = f"{{%- set default_system = {_jinja_literal(template.default_system)} -%}}\n"
    if template.default_system is not None and header not in template.jinja:
        raise ConfigError(f"chat template {template.id!r} does not set its system prompt in a header line")
    return replace(
        template,
        id=new_id,
        default_system=system,
        jinja=template.jinja.replace(header, f"{{%- set default_system = {_jinja_literal(system)} -%}}\n", 1),
    )


def all_special_tokens() -> list[str]:
    """Every special token any template uses, plus the image and fallback pad tokens (stable order)."""
    tokens = [FALLBACK_PAD_TOKEN, IMAGE_TOKEN]
    for template in _registry().values():
        for token in (*template.special_tokens, template.pad_token):
            if token and token not in tokens:
                tokens.append(token)
    return tokens
