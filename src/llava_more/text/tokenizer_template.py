"""A tokenizer's own chat template as a ``ChatTemplate``: what llava-more needs, read off the template.

A backbone declared in params.yaml without a ``template`` uses the chat template its checkpoint's
tokenizer ships. Everything the pipeline needs about it is found by rendering a probe conversation
whose texts are sentinels:

- the end-of-turn: the special token the template writes right after an assistant reply (a template
  that writes none cannot be trained on here, and says so);
- the generation prompt and the whitespace before a reply, from rendering with and without the reply;
- BOS (when the render starts with the tokenizer's), whether a system turn is rendered, and the
  special tokens the template writes (so a tiny twin's demo tokenizer can be given them).

A declared system prompt is injected by a short preamble that adds a system turn to conversations
that have none, so the template string saved with a bundle is self-contained.
"""

from __future__ import annotations

import json
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

from llava_more.errors import ConfigError
from llava_more.text.render import Turn, render_turns
from llava_more.text.templates import TOKENIZER_TEMPLATE_ID, ChatTemplate, with_ecosystem_messages

SYSTEM_PREAMBLE_MARKER = "{#- llava-more: default system prompt -#}"


def with_system_prompt(jinja: str, system_prompt: str) -> str:
    """``jinja`` rendering ``system_prompt`` as the system turn of conversations that have none."""
    preamble = (
        SYSTEM_PREAMBLE_MARKER
        + "\n{%- if not messages or messages[0]['role'] != 'system' -%}"
        + "{%- set messages = [{'role': 'system', 'content': "
        + json.dumps(system_prompt, ensure_ascii=False)
        + "}] + messages -%}{%- endif -%}\n"
    )
    return with_ecosystem_messages(jinja).replace(
        "{%- set messages = llava_more_messages.items -%}\n{%- endif -%}\n",
        "{%- set messages = llava_more_messages.items -%}\n{%- endif -%}\n" + preamble,
        1,
    )


def _special_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    strings = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    strings.update(t for t in tokenizer.all_special_tokens if t)
    return sorted(strings, key=len, reverse=True)


def template_from_tokenizer(
    tokenizer: PreTrainedTokenizerBase, *, system_prompt: str | None = None, name: str = "the tokenizer"
) -> ChatTemplate:
    """The ``ChatTemplate`` of ``tokenizer.chat_template`` (plus ``system_prompt``, when given)."""
    source = tokenizer.chat_template
    if isinstance(source, dict):  # several named templates: the default one
        source = source.get("default")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(
            f"{name} has no chat template; give the LLM one of the built-in templates "
            "(params.yaml: backbones.llm.<id>.template)"
        )
    jinja = with_ecosystem_messages(source)
    if system_prompt is not None:
        jinja = with_system_prompt(jinja, system_prompt)
    draft = ChatTemplate(
        id=TOKENIZER_TEMPLATE_ID,
        jinja=jinja,
        bos_token=None,
        end_of_turn=None,
        stop_tokens=(),
        stop_strings=(),
        default_system=system_prompt,
        has_system_role=True,
        reply_prefix="",
        assistant_header="",
        pad_token=None,
        special_tokens=(),
    )
    question, reply = "Q\ue010", "A\ue011"
    user = Turn("user", question)
    prompt = render_turns(tokenizer, [user], draft, generation_prompt=True, supervise=False).text
    full = render_turns(
        tokenizer, [user, Turn("assistant", reply)], draft, generation_prompt=False, supervise=False
    ).text
    if not full.startswith(prompt) or reply not in full[len(prompt) :]:
        raise ConfigError(
            f"{name}'s chat template does not render a reply after its generation prompt; "
            "give the LLM one of the built-in templates (params.yaml: backbones.llm.<id>.template)"
        )
    reply_at = full.index(reply, len(prompt))
    prefix = full[len(prompt) : reply_at]
    after = full[reply_at + len(reply) :]
    specials = _special_strings(tokenizer)
    end_of_turn = next((s for s in specials if after.startswith(s)), None)
    if end_of_turn is None or prefix.strip():
        raise ConfigError(
            f"{name}'s chat template writes {prefix + reply + after[:20]!r} for a reply: llava-more "
            "supervises a reply followed by one special end-of-turn token; give the LLM one of the "
            "built-in templates (params.yaml: backbones.llm.<id>.template)"
        )
    system_text = "S\ue012"
    with_system = render_turns(
        tokenizer, [Turn("system", system_text), user], draft, generation_prompt=True, supervise=False
    )
    has_system = system_text in with_system.text
    scaffold = full.replace(question, "").replace(reply, "") + with_system.text.replace(system_text, "")
    used = tuple(s for s in specials if s in scaffold)
    bos = tokenizer.bos_token if tokenizer.bos_token and full.startswith(tokenizer.bos_token) else None
    # The assistant header: what the generation prompt adds; a template that writes it after every user
    # turn anyway (Phi-3's) has it after the user's end-of-turn.
    without = render_turns(tokenizer, [user], draft, generation_prompt=False, supervise=False).text
    header = prompt[len(without) :] if prompt.startswith(without) else ""
    if not header:
        header = prompt[prompt.index(question) + len(question) :]
        header = header.removeprefix(end_of_turn).lstrip() if header.startswith(end_of_turn) else header
    eos = tokenizer.eos_token
    return ChatTemplate(
        id=TOKENIZER_TEMPLATE_ID,
        jinja=jinja,
        bos_token=bos,
        end_of_turn=end_of_turn,
        stop_tokens=tuple(dict.fromkeys(t for t in (end_of_turn, eos) if t)),
        stop_strings=(),
        default_system=system_prompt,
        has_system_role=has_system,
        reply_prefix=prefix,
        assistant_header=header,
        pad_token=tokenizer.pad_token if tokenizer.pad_token not in (None, end_of_turn) else None,
        special_tokens=used,
    )


@lru_cache(maxsize=64)
def cached_template_from_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str) -> ChatTemplate:
    """``template_from_tokenizer(tokenizer)``, once per tokenizer and chat template (``source``): every
    sample of a training set resolves its template this way."""
    return template_from_tokenizer(tokenizer)
