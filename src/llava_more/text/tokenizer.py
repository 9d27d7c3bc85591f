"""The demo tokenizer (a byte-level BPE trained on the demo corpus) and per-LLM tokenizer configuration.

One demo tokenizer serves every LLM family of the demo study: it knows every special token of every
chat template, and :func:`apply_template` turns it (or a real Hugging Face tokenizer on a cluster) into
the tokenizer of one family: its chat template, BOS, EOS and a pad token.

Padding side: the returned tokenizer pads on the right (training). Batched generation needs left
padding; the caller sets ``tokenizer.padding_side = "left"`` on its own copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from llava_more.errors import ConfigError
from llava_more.text.templates import (
    FALLBACK_PAD_TOKEN,
    IMAGE_TOKEN,
    TEMPLATE_IDS,
    ChatTemplate,
    all_special_tokens,
    get_template,
)

BYTE_ALPHABET_SIZE = 256
# Roughly how many corpus texts (turns) one sample holds: the template scaffolding is added about once
# per sample, as often as a rendered training set would carry it.
_TEXTS_PER_SAMPLE = 4


def template_scaffolding() -> list[str]:
    """Plain text every rendered sample carries besides its turns: system prompts and role words."""
    texts = ["system user assistant model", "USER: ASSISTANT:"]
    for template_id in TEMPLATE_IDS:
        system = get_template(template_id).default_system
        if system and system not in texts:
            texts.append(system)
    return texts


def train_demo_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``, save it as a Hugging Face tokenizer in ``out_dir`` and return it.

    Every template's special tokens, ``<image>`` and ``<pad>`` are single special tokens, and the
    templates' system prompts and role words are part of the corpus (so every sample's scaffolding is a
    few tokens, not hundreds of bytes). The result is not configured for any LLM yet (only its pad token
    is set): pass it through :func:`apply_template`.
    """
    special_tokens = all_special_tokens()
    smallest = BYTE_ALPHABET_SIZE + len(special_tokens)
    if vocab_size <= smallest:
        raise ConfigError(
            f"vocab size {vocab_size} is too small for a byte-level BPE with {len(special_tokens)} special "
            f"tokens; use a vocab size above {smallest}"
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(texts)
    corpus += template_scaffolding() * max(1, len(corpus) // _TEXTS_PER_SAMPLE)
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=FALLBACK_PAD_TOKEN,
        extra_special_tokens=[t for t in special_tokens if t != FALLBACK_PAD_TOKEN],
    )
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def _ensure_special_tokens(tokenizer: PreTrainedTokenizerBase, tokens: Iterable[str]) -> None:
    vocab = tokenizer.get_vocab()
    missing = [t for t in dict.fromkeys(tokens) if t not in vocab]
    if missing:
        # normalized=False: the marker must match the raw text, whatever the tokenizer's normalizer does.
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True
        )


def apply_template(
    tokenizer: PreTrainedTokenizerBase, template_id: str | ChatTemplate, *, pad_token: str | None = None
) -> PreTrainedTokenizerBase:
    """A copy of ``tokenizer`` configured for one LLM family (the input is left untouched).

    Sets ``chat_template``; BOS to the family's BOS (None where it writes none); EOS to the template's
    end-of-turn token, so generation stops at the end of a reply; a pad token distinct from EOS (the
    tokenizer's own if it has one, else the family's, else ``<pad>``). Markers the template needs and
    ``<image>`` are added as special tokens when missing, which grows ``len(tokenizer)``: build the model
    with ``vocab_size=len(tokenizer)``. For ``plain`` only the chat template is set (it uses the
    tokenizer's own BOS/EOS). ``template_id`` may also be a ``ChatTemplate`` (e.g. another tokenizer's
    own, from ``llava_more.text.tokenizer_template``), or ``tokenizer`` for this tokenizer's own.
    ``pad_token`` (an LLM's declared pad token) wins over the choice above when it differs from EOS.
    """
    template = template_id if isinstance(template_id, ChatTemplate) else get_template(template_id, tokenizer)
    configured = copy.deepcopy(tokenizer)
    _ensure_special_tokens(configured, (*template.special_tokens, IMAGE_TOKEN))
    configured.chat_template = template.jinja
    if template.end_of_turn is None:
        return configured

    configured.bos_token = template.bos_token
    configured.eos_token = template.end_of_turn
    vocab = configured.get_vocab()
    if pad_token is not None and pad_token != configured.eos_token:
        pad = pad_token
    elif configured.pad_token is not None and configured.pad_token != configured.eos_token:
        pad = configured.pad_token
    elif template.pad_token is not None and template.pad_token in vocab:
        pad = template.pad_token
    else:
        pad = FALLBACK_PAD_TOKEN
    _ensure_special_tokens(configured, [pad])
    configured.pad_token = pad
    configured.padding_side = "right"
    return configured
