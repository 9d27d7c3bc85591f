"""``llava-more chat``: talk to a model about one image, once or turn by turn, streaming each answer.

Two kinds of model are served:

- a llava-more bundle (a folder with ``llava_more.json``): prompts are rendered with the bundle's chat
  template exactly as the lmms-eval plugin does (``<image>`` first in the first user turn, expanded to
  ``meta.image_tokens`` copies) and the image is padded to a square with the processor's mean colour;
- any other Hugging Face image-text-to-text model (a local folder or a Hub id): ``AutoProcessor`` renders
  the conversation with its own chat template and prepares the image the way that model expects.

The image is given once, in the first user turn; later turns carry the history (questions and the
answers given) so follow-up questions work. Decoding is greedy at temperature 0.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from PIL import Image
from transformers import TextStreamer

from llava_more.data.images import load_image as load_image_file
from llava_more.device import resolve_device
from llava_more.errors import ConfigError, UserError
from llava_more.eval.lmms_model import cut_at_stops, stop_token_ids
from llava_more.model.preprocess import ASPECT_RATIOS, pixel_values

log = logging.getLogger(__name__)

QUANTIZATIONS = ("8bit", "4bit")
EXIT_WORDS = ("exit", "quit", "/exit", "/quit")
RESET_WORDS = ("/reset", "/clear")
# Marks a template that printed a structured (list) message content as Python text instead of reading it.
_STRUCTURED_CONTENT_LEAK = "'type':"


# ---------------------------------------------------------------------------------------------- inputs
def load_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as training and evaluation see it (``llava_more.data.images``).

    A missing, unreadable or oversized file is a ``UserError``.
    """
    return load_image_file(path, hint="pass an existing PNG, JPEG or other image Pillow reads with --image")


def bundle_pixel_values(
    image_processor: Any, images: Sequence[Image.Image], aspect_ratio: str = "pad"
) -> torch.Tensor:
    """Pixel values the way bundles are evaluated: padded to a square with the mean colour (``pad``) or not."""
    if aspect_ratio not in ASPECT_RATIOS:
        raise UserError(f"image_aspect_ratio={aspect_ratio!r}: expected one of {', '.join(ASPECT_RATIOS)}")
    return pixel_values(image_processor, images, aspect_ratio)


# ---------------------------------------------------------------------------------------------- models
def _quantization_config(quantization: str | None, device: str) -> Any:
    """A ``BitsAndBytesConfig`` for ``8bit``/``4bit`` on a GPU; None for full precision."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise UserError(f"quantization {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if not device.startswith("cuda"):
        raise UserError(
            f"--load-in-{quantization}: bitsandbytes quantization runs on a CUDA GPU only and --device is "
            f"{device}; drop the flag to chat in full precision"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"--load-in-{quantization} needs the bitsandbytes package: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute)


def _torch_dtype(dtype: str | None) -> torch.dtype | None:
    if dtype in (None, "auto"):
        return None
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"--dtype {dtype}: expected auto or a torch dtype name such as float32 or bfloat16")
    return value


class ChatModel:
    """A loaded model that can render a conversation about one image and turn it into model inputs."""

    model: Any
    tokenizer: Any
    stop_token_ids: list[int]
    stop_strings: list[str]
    max_positions: int | None

    def render(self, history: Sequence[dict[str, str]]) -> str:
        """The prompt for ``history`` (alternating user/assistant turns ending with a user turn)."""
        raise NotImplementedError

    def encode(self, prompt: str, image: Image.Image) -> dict[str, torch.Tensor]:
        """``generate`` inputs for ``prompt`` (rendered by ``render``) and the conversation's image."""
        raise NotImplementedError

    def _finish_setup(self, name: str, stop_tokens: Sequence[str] = ()) -> None:
        self.stop_token_ids = stop_token_ids(self.tokenizer, self.model, stop_tokens)
        if not self.stop_token_ids:
            raise UserError(f"{name}: the tokenizer has no EOS token, so an answer could never end")
        config = getattr(self.model.config, "text_config", self.model.config)
        self.max_positions = getattr(config, "max_position_embeddings", None)


class BundleChatModel(ChatModel):
    """A llava-more bundle, prompted and preprocessed exactly as the lmms-eval plugin evaluates it."""

    def __init__(self, path: Path, device: str, dtype: str | None, quantization: str | None) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        from llava_more.model import BundleMeta, load_bundle
        from llava_more.text import get_template

        quantization_config = _quantization_config(quantization, device)
        if quantization_config is None:
            bundle = load_bundle(path, device=device, dtype=_torch_dtype(dtype))
            self.model, self.tokenizer = bundle.model, bundle.tokenizer
            self.image_processor, self.meta = bundle.image_processor, bundle.meta
        else:  # load_bundle has no quantized mode: the same three loads, with bitsandbytes
            self.meta = BundleMeta.read(path)
            self.model = AutoModelForImageTextToText.from_pretrained(
                path, quantization_config=quantization_config, device_map={"": device}
            )
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.image_processor = AutoImageProcessor.from_pretrained(path)
        self.model.eval()
        self.template = get_template(self.meta.template)
        self.stop_strings = list(self.template.stop_strings)
        self.aspect_ratio = getattr(self.meta, "image_aspect_ratio", None) or "pad"
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.meta.image_token)
        if self.image_token_id is None or self.image_token_id == self.tokenizer.unk_token_id:
            raise UserError(
                f"{path}: the tokenizer has no token {self.meta.image_token!r} (llava_more.json image_token); "
                "rebuild the bundle with the demo tokenizer or the LLM's tokenizer plus that token"
            )
        self._finish_setup(str(path), self.template.stop_tokens)

    def render(self, history: Sequence[dict[str, str]]) -> str:
        from jinja2 import TemplateError

        from llava_more.text import IMAGE_TOKEN, to_messages

        turns = [dict(turn) for turn in history]
        turns[0]["content"] = f"{IMAGE_TOKEN}\n{turns[0]['content']}"
        try:
            return self.tokenizer.apply_chat_template(
                to_messages(turns),
                chat_template=self.template.jinja,
                tokenize=False,
                add_generation_prompt=True,
            )
        except TemplateError as exc:
            raise ConfigError(f"chat template {self.template.id!r} could not render the chat: {exc}") from exc

    def encode(self, prompt: str, image: Image.Image) -> dict[str, torch.Tensor]:
        from llava_more.text import IMAGE_TOKEN

        expanded = prompt.replace(IMAGE_TOKEN, self.meta.image_token * self.meta.image_tokens)
        ids = self.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"]
        found = int((ids == self.image_token_id).sum())
        if found != self.meta.image_tokens:
            raise UserError(
                f"the prompt holds {found} image tokens for {self.meta.image_tokens}; the tokenizer must keep "
                f"{self.meta.image_token!r} as one special token"
            )
        pixel_values = bundle_pixel_values(self.image_processor, [image], self.aspect_ratio)
        return {
            "input_ids": ids.to(self.model.device),
            "attention_mask": torch.ones_like(ids).to(self.model.device),
            "pixel_values": pixel_values.to(self.model.device, dtype=self.model.dtype),
        }


class ProcessorChatModel(ChatModel):
    """A Hugging Face image-text-to-text model driven by its ``AutoProcessor`` and the processor's chat template."""

    def __init__(self, name: str, device: str, dtype: str | None, quantization: str | None) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        import llava_more.model.llava  # noqa: F401  (so llava_more-type folders load through the Auto classes)

        quantization_config = _quantization_config(quantization, device)
        try:
            self.processor = AutoProcessor.from_pretrained(name)
            if quantization_config is None:
                self.model = AutoModelForImageTextToText.from_pretrained(
                    name, dtype=_torch_dtype(dtype) or "auto"
                )
                self.model.to(device)
            else:
                self.model = AutoModelForImageTextToText.from_pretrained(
                    name, quantization_config=quantization_config, device_map={"": device}
                )
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"{name}: could not load it as an image-text-to-text model with a processor ({reason}); pass a "
                "llava-more bundle, a Hugging Face model folder or a Hub id of an image-text-to-text model"
            ) from None
        self.model.eval()
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None or not getattr(self.processor, "chat_template", None):
            raise UserError(f"{name}: its processor has no tokenizer or no chat template, so it cannot chat")
        self.image_token = getattr(self.processor, "image_token", None) or "<image>"
        self.stop_strings = []
        self._finish_setup(name)
        self._structured = self._template_reads_structured_content()

    def _template_reads_structured_content(self) -> bool:
        """Whether the chat template takes HF's list-of-parts message content (most HF models) or plain strings.

        A string-only template (llava-more's own, saved with a bundle) prints a list as Python text.
        """
        probe = [{"role": "user", "content": [{"type": "text", "text": "probe"}]}]
        rendered = self.processor.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        return _STRUCTURED_CONTENT_LEAK not in rendered

    def render(self, history: Sequence[dict[str, str]]) -> str:
        messages: list[dict[str, Any]] = []
        for index, turn in enumerate(history):
            text = turn["content"]
            if self._structured:
                parts = [{"type": "text", "text": text}]
                content: Any = [{"type": "image"}, *parts] if index == 0 else parts
            else:
                content = f"{self.image_token}\n{text}" if index == 0 else text
            messages.append({"role": turn["role"], "content": content})
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, prompt: str, image: Image.Image) -> dict[str, torch.Tensor]:
        # The rendered prompt already holds the template's BOS (as apply_chat_template(tokenize=True) assumes).
        inputs = self.processor(text=prompt, images=[image], add_special_tokens=False, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return dict(inputs)


def load_chat_model(
    model: str, *, device: str | None = None, dtype: str | None = "auto", quantization: str | None = None
) -> ChatModel:
    """A bundle folder (has ``llava_more.json``), another HF model folder, or a Hub id, ready to chat.

    ``device`` None or ``auto`` picks CUDA when this job has a usable GPU, else the CPU. ``quantization`` is ``8bit``/``4bit`` (GPU only).
    """
    from llava_more.model.bundle import META_FILE

    device = resolve_device(device, purpose="chat")
    _quantization_config(quantization, device)  # fail on a bad flag before any slow load
    path = Path(model)
    if path.is_dir():
        if (path / META_FILE).is_file():
            return BundleChatModel(path, device, dtype, quantization)
        if not (path / "config.json").is_file():
            raise UserError(
                f"{path}: not a model folder (neither {META_FILE} nor config.json); pass a llava-more bundle, "
                "a Hugging Face model folder or a Hub id"
            )
    elif path.exists():
        raise UserError(f"{path}: is a file; --model takes a model folder or a Hugging Face Hub id")
    return ProcessorChatModel(model, device, dtype, quantization)


# ---------------------------------------------------------------------------------------------- chatting
class _AnswerStreamer(TextStreamer):
    """Writes the answer to ``out`` as it is generated.

    Text that may begin a stop string, and trailing whitespace, are held back until more text follows, so
    what is shown is exactly the (stripped) answer that is kept in the history.
    """

    def __init__(self, tokenizer: Any, out: TextIO, stop_strings: Sequence[str]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out, self.stops = out, [s for s in stop_strings if s]
        self.pending, self.started, self.stopped = "", False, False

    def _emit(self, text: str) -> None:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        if text:
            self.out.write(text)
            self.out.flush()

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if not self.stopped:
            self.pending += text
            shown = cut_at_stops(self.pending, self.stops)
            self.stopped = len(shown) < len(self.pending)
            if not (self.stopped or stream_end):
                shown = shown[: len(shown) - _stop_prefix_length(shown, self.stops)]
            shown = shown.rstrip()  # trailing whitespace waits for more text: the kept answer is stripped
            self._emit(shown)
            self.pending = "" if self.stopped else self.pending[len(shown) :]
        if stream_end:
            self.out.write("\n")
            self.out.flush()


def _stop_prefix_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins one of ``stops``."""
    return max((n for stop in stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)


def check_decoding(max_new_tokens: int, temperature: float) -> None:
    """Reject decoding settings that cannot work (before a slow model load)."""
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens}: must be at least 1")
    if temperature < 0:
        raise UserError(f"--temperature {temperature}: must be 0 (greedy) or more")


class ChatSession:
    """A conversation about one image: ``ask`` streams each answer and keeps it in the history."""

    def __init__(
        self,
        chat_model: ChatModel,
        image: Image.Image,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> None:
        check_decoding(max_new_tokens, temperature)
        self.chat_model, self.image = chat_model, image
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.history: list[dict[str, str]] = []
        self.last_prompt: str | None = None

    def reset(self) -> None:
        """Forget the conversation; the image stays and goes with the next question."""
        self.history, self.last_prompt = [], None

    def ask(self, question: str, out: TextIO | None = None) -> str:
        """Answer ``question`` given the history, streaming the answer to ``out`` (stdout by default)."""
        from llava_more.text import IMAGE_TOKEN

        question = question.replace(IMAGE_TOKEN, "").strip()  # the image is placed once, by the session
        if not question:
            raise UserError("empty question; type a question about the image")
        chat = self.chat_model
        turns = [*self.history, {"role": "user", "content": question}]
        prompt = chat.render(turns)
        inputs = chat.encode(prompt, self.image)
        prompt_length = inputs["input_ids"].shape[1]
        max_new = self.max_new_tokens
        if chat.max_positions is not None:
            if prompt_length >= chat.max_positions:
                raise UserError(
                    f"the conversation is {prompt_length} tokens, the model holds {chat.max_positions}; "
                    "type /reset to start over"
                )
            max_new = min(max_new, chat.max_positions - prompt_length)

        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": self.temperature}
            if self.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        if chat.stop_strings:
            sampling.update(stop_strings=chat.stop_strings, tokenizer=chat.tokenizer)
        pad_token_id = chat.tokenizer.pad_token_id
        streamer = _AnswerStreamer(chat.tokenizer, out or sys.stdout, chat.stop_strings)
        with torch.inference_mode():
            output = chat.model.generate(
                **inputs,
                max_new_tokens=max_new,
                num_beams=1,
                eos_token_id=chat.stop_token_ids,
                pad_token_id=pad_token_id if pad_token_id is not None else chat.stop_token_ids[0],
                streamer=streamer,
                **sampling,
            )
        text = chat.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True)
        answer = cut_at_stops(text, chat.stop_strings).strip()
        self.last_prompt = prompt
        self.history = [*turns, {"role": "assistant", "content": answer}]
        return answer


def chat_loop(session: ChatSession, lines: TextIO, out: TextIO, prompts: TextIO | None = None) -> int:
    """Answer each line of ``lines`` until EOF or ``exit``; ``/reset`` clears the history. Returns answers given.

    Answers go to ``out``; the ``>>>`` prompts and notices go to ``prompts`` (stderr), so ``out`` holds
    only answers.
    """

    def notice(text: str) -> None:
        if prompts is not None:
            prompts.write(text)
            prompts.flush()

    notice(f"chat about the image: type a question; {RESET_WORDS[0]} forgets the conversation, exit quits\n")
    answered = 0
    try:
        while True:
            notice(">>> ")
            line = lines.readline()
            if not line:
                notice("\n")
                break
            question = line.strip()
            if not question:
                continue
            if question.lower() in EXIT_WORDS:
                break
            if question.lower() in RESET_WORDS:
                session.reset()
                notice("(conversation cleared)\n")
                continue
            try:
                session.ask(question, out)
            except UserError as exc:  # e.g. a conversation grown past the context: say so and go on
                notice(f"error: {exc}\n")
                continue
            answered += 1
    except KeyboardInterrupt:
        notice("\n")
    return answered
