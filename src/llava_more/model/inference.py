"""Prompting a model, one way for every caller: render -> encode -> pad -> generate -> stop.

Chat (``eval/chat.py``), the lmms-eval plugin (``eval/lmms_model.py``) and recaptioning
(``data/download/recaption.py``) all get their answers from a ``Prompter``, of one of two kinds:

- ``BundlePrompter``: a llava-more bundle. Prompts are rendered and tokenized by ``llava_more.text``
  (``encode_prompt``: the bundle's chat template up to the assistant header, the image slots at the
  start of the first user turn, each expanded to the bundle's image-token count; text a user typed
  stays text, a spelled ``<image>`` or control token included), and images go through the bundle's
  image processor under its ``image_aspect_ratio`` (``pad``: onto a square of the processor's mean
  colour first, as LLaVA-1.5 trains and evaluates).
- ``ProcessorPrompter``: any other Hugging Face image-text-to-text model (a folder or a Hub id),
  driven by its ``AutoProcessor``: its own chat template renders the prompt and the processor
  prepares text and images together, the way that model expects.

Batches are exact: prompts are left-padded with an attention mask, decoding is greedy unless a
temperature is asked for, and each row stops on its own (on a stop token, or on a stop string
through ``StopOnStrings``), so a batch of N gives the answers of N batches of one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    BitsAndBytesConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)

from llava_more.errors import UserError
from llava_more.model.bundle import META_FILE, load_bundle
from llava_more.model.preprocess import ASPECT_RATIOS, pixel_values
from llava_more.text.encode import encode_prompt
from llava_more.text.templates import IMAGE_TOKEN, get_template

QUANTIZATIONS = ("8bit", "4bit")
# Marks a template that printed a structured (list) message content as Python text instead of reading it.
_STRUCTURED_CONTENT_LEAK = "'type':"


@dataclass(frozen=True)
class Prompt:
    """A rendered generation prompt: its text, and its token ids where they are known before the images
    are (a bundle's: the text alone cannot tell them, since text a user typed stays text)."""

    text: str
    input_ids: list[int] | None = None


# ---------------------------------------------------------------------------------------------- options
def torch_dtype(name: str | torch.dtype | None, option: str = "--dtype") -> torch.dtype | None:
    """The dtype ``name`` means; None (keep the saved dtype) for None or ``auto``."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return None
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"{option} {name}: expected auto or a torch dtype name such as float32 or bfloat16")
    return value


def quantization_config(quantization: str | None, device: str) -> BitsAndBytesConfig | None:
    """A ``BitsAndBytesConfig`` for ``8bit``/``4bit`` on a GPU; None for full precision."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise UserError(f"quantization {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if not str(device).startswith("cuda"):
        raise UserError(
            f"--load-in-{quantization}: bitsandbytes quantization runs on a CUDA GPU only and --device is "
            f"{device}; drop the flag to run in full precision"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"--load-in-{quantization} needs the bitsandbytes package: pip install bitsandbytes")
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute)


# ---------------------------------------------------------------------------------------------- stops
def stop_token_ids(tokenizer: Any, model: Any, stop_tokens: Sequence[str] = ()) -> list[int]:
    """End-of-turn ids: the template's stop tokens, the tokenizer's EOS and the generation config's EOS."""
    vocab = tokenizer.get_vocab()
    candidates: list = [vocab.get(token) for token in stop_tokens]
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        candidates.extend(value if isinstance(value, list) else [value])
    return list(dict.fromkeys(int(t) for t in candidates if t is not None))


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text before the first stop string (lmms-eval's ``until`` semantics)."""
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class StopOnStrings(StoppingCriteria):
    """Per-row stop when the generated text contains one of ``stops``.

    Returning one flag per row lets transformers finish rows independently (finished rows are
    filled with padding), which is what keeps batched answers identical to single ones.
    """

    def __init__(self, tokenizer: Any, prompt_length: int, stops: Sequence[str]):
        self.tokenizer, self.prompt_length, self.stops = tokenizer, prompt_length, list(stops)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


def pad(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of unequal lengths as one ``(ids, attention_mask)`` batch.

    ``left`` for generation (every row continues from the right end); ``right`` for scoring (real
    tokens keep positions 0..n-1, exactly as when scored alone).
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------- prompters
class Prompter:
    """A loaded model that answers prompts about images (the two kinds below fill in ``prompt`` and ``inputs``)."""

    name: str
    model: Any
    tokenizer: Any
    stop_token_ids: list[int]
    stop_strings: list[str]  # the template's: text that ends a turn where no single token does
    max_positions: int | None

    def prompt(self, turns: Sequence[Mapping[str, str]], images: int) -> Prompt:
        """The generation prompt for ``turns`` (ending with a user turn), ``images`` slots in the first one."""
        raise NotImplementedError

    def inputs(self, prompts: Sequence[Prompt], images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """``generate`` inputs for a batch of ``prompts`` and their ``images`` (in prompt order), left-padded."""
        raise NotImplementedError

    def _finish_setup(self, name: str, stop_tokens: Sequence[str] = ()) -> None:
        self.name = name
        self.model.eval()
        self.stop_token_ids = stop_token_ids(self.tokenizer, self.model, stop_tokens)
        if not self.stop_token_ids:
            raise UserError(f"{name}: the tokenizer has no EOS token, so an answer could never end")
        config = getattr(self.model.config, "text_config", self.model.config)
        self.max_positions = getattr(config, "max_position_embeddings", None)

    @property
    def pad_token_id(self) -> int:
        pad_id = self.tokenizer.pad_token_id
        return pad_id if pad_id is not None else self.stop_token_ids[0]

    def room(self, prompt_length: int, wanted: int, hint: str) -> int:
        """How many tokens may follow a prompt of ``prompt_length`` (at most ``wanted``)."""
        if self.max_positions is None:
            return wanted
        if prompt_length >= self.max_positions:
            raise UserError(
                f"a prompt of {prompt_length} tokens does not fit the model's {self.max_positions} positions; {hint}"
            )
        return min(wanted, self.max_positions - prompt_length)

    def generate(
        self,
        inputs: Mapping[str, torch.Tensor],
        *,
        max_new_tokens: int,
        stop_strings: Sequence[str] | None = None,
        temperature: float = 0.0,
        streamer: Any = None,
        hint: str = "use a model of longer context",
    ) -> list[str]:
        """One answer per row of ``inputs``: cut at the first stop string (default: the template's), stripped.

        ``temperature`` 0 decodes greedily; ``hint`` ends the error for a prompt the model cannot hold.
        """
        stops = self.stop_strings if stop_strings is None else list(stop_strings)
        prompt_length = inputs["input_ids"].shape[1]
        max_new = self.room(prompt_length, max_new_tokens, hint)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        stopping = (
            StoppingCriteriaList([StopOnStrings(self.tokenizer, prompt_length, stops)]) if stops else None
        )
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new,
                num_beams=1,
                eos_token_id=self.stop_token_ids,
                pad_token_id=self.pad_token_id,
                stopping_criteria=stopping,
                streamer=streamer,
                **sampling,
            )
        texts = self.tokenizer.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
        return [cut_at_stops(text, stops).strip() for text in texts]

    def answer(
        self, prompts: Sequence[Prompt], images: Sequence[Image.Image], **generation: Any
    ) -> list[str]:
        """``generate`` over the inputs of ``prompts`` and their images."""
        return self.generate(self.inputs(prompts, images), **generation)


class BundlePrompter(Prompter):
    """A llava-more bundle, prompted with its own template, image-token count and image preparation.

    ``image_aspect_ratio`` overrides the bundle's (``llava_more.json``; none recorded: ``pad``).
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        *,
        quantization: str | None = None,
        image_aspect_ratio: str | None = None,
    ) -> None:
        self.path = Path(path)
        bundle = load_bundle(
            self.path,
            device=device,
            dtype=torch_dtype(dtype),
            quantization_config=quantization_config(quantization, device),
        )
        self.model, self.tokenizer = bundle.model, bundle.tokenizer
        self.image_processor, self.meta = bundle.image_processor, bundle.meta
        self.template = get_template(self.meta.template, self.tokenizer)
        self.stop_strings = list(self.template.stop_strings)
        aspect = image_aspect_ratio or self.meta.image_aspect_ratio or "pad"
        if aspect not in ASPECT_RATIOS:
            raise UserError(f"image_aspect_ratio={aspect!r}: expected one of {', '.join(ASPECT_RATIOS)}")
        self.image_aspect_ratio = aspect
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.meta.image_token)
        if self.image_token_id is None or self.image_token_id == self.tokenizer.unk_token_id:
            raise UserError(
                f"{path}: the tokenizer has no token {self.meta.image_token!r} (llava_more.json image_token); "
                "rebuild the bundle with the demo tokenizer or the LLM's tokenizer plus that token"
            )
        if self.tokenizer.pad_token_id is None:
            raise UserError(
                f"{path}: the tokenizer has no pad token; rebuild the bundle (`apply_template` sets one)"
            )
        self._finish_setup(str(path), self.template.stop_tokens)

    def prompt(self, turns: Sequence[Mapping[str, str]], images: int) -> Prompt:
        encoded = encode_prompt(
            self.tokenizer, self.template, turns, images=images, num_image_tokens=self.meta.image_tokens
        )
        return Prompt(encoded.text, encoded.input_ids)

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor | None:
        """The images as the bundle sees them, on its device and in its dtype; None for no image."""
        if not images:
            return None
        values = pixel_values(self.image_processor, images, self.image_aspect_ratio)
        return values.to(self.model.device, dtype=self.model.dtype)

    def inputs(self, prompts: Sequence[Prompt], images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        ids, mask = pad([p.input_ids for p in prompts], self.tokenizer.pad_token_id, side="left")
        inputs = {"input_ids": ids.to(self.model.device), "attention_mask": mask.to(self.model.device)}
        values = self.pixel_values(images)
        if values is not None:
            inputs["pixel_values"] = values
        return inputs


class ProcessorPrompter(Prompter):
    """A Hugging Face image-text-to-text model driven by its ``AutoProcessor`` and the processor's chat template."""

    def __init__(
        self,
        name: str,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        *,
        quantization: str | None = None,
    ) -> None:
        config = quantization_config(quantization, device)
        try:
            self.processor = AutoProcessor.from_pretrained(name)
            if config is None:
                self.model = AutoModelForImageTextToText.from_pretrained(
                    name, dtype=torch_dtype(dtype) or "auto"
                )
                self.model.to(device)
            else:
                self.model = AutoModelForImageTextToText.from_pretrained(
                    name, quantization_config=config, device_map={"": device}
                )
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"{name}: could not load it as an image-text-to-text model with a processor ({reason}); pass a "
                "llava-more bundle, a Hugging Face model folder or a Hub id of an image-text-to-text model"
            ) from None
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None or not getattr(self.processor, "chat_template", None):
            raise UserError(
                f"{name}: its processor has no tokenizer or no chat template, so it cannot be prompted"
            )
        self.tokenizer.padding_side = "left"  # generation continues from the right end
        self.image_token = getattr(self.processor, "image_token", None) or IMAGE_TOKEN
        self.stop_strings = []
        self._finish_setup(name)
        self._structured = self._template_reads_structured_content()

    def _template_reads_structured_content(self) -> bool:
        """Whether the chat template takes HF's list-of-parts message content (most HF models) or plain strings.

        A string-only template (llava-more's own before it read parts) prints a list as Python text.
        """
        probe = [{"role": "user", "content": [{"type": "text", "text": "probe"}]}]
        rendered = self.processor.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        return _STRUCTURED_CONTENT_LEAK not in rendered

    def prompt(self, turns: Sequence[Mapping[str, str]], images: int) -> Prompt:
        messages: list[dict[str, Any]] = []
        for index, turn in enumerate(turns):
            # A processor reads every image placeholder in the text as an image: a typed one is dropped.
            text = turn["content"].replace(self.image_token, "").strip()
            slots = images if index == 0 else 0
            if self._structured:
                content: Any = [*([{"type": "image"}] * slots), {"type": "text", "text": text}]
            else:
                content = f"{self.image_token}\n" * slots + text
            messages.append({"role": turn["role"], "content": content})
        return Prompt(
            self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )

    def inputs(self, prompts: Sequence[Prompt], images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        texts = [p.text for p in prompts]
        # As apply_chat_template(tokenize=True) decides: a template that writes the BOS gets no second one.
        bos = self.tokenizer.bos_token
        batch = self.processor(
            text=texts,
            images=list(images) or None,
            padding=True,
            add_special_tokens=not (bos and texts[0].startswith(bos)),
            return_tensors="pt",
        ).to(self.model.device)
        if "pixel_values" in batch and batch["pixel_values"].is_floating_point():
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        return dict(batch)


def is_bundle(model: str | Path) -> bool:
    """Whether ``model`` is a llava-more bundle (a folder with ``llava_more.json``) rather than another
    Hugging Face model (a folder with ``config.json``, or a Hub id); anything else is a ``UserError``."""
    path = Path(model)
    if path.is_dir():
        if (path / META_FILE).is_file():
            return True
        if not (path / "config.json").is_file():
            raise UserError(
                f"{path}: not a model folder (neither {META_FILE} nor config.json); pass a llava-more bundle, "
                "a Hugging Face model folder or a Hub id"
            )
    elif path.exists():
        raise UserError(f"{path}: is a file; pass a model folder or a Hugging Face Hub id")
    return False
