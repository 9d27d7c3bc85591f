"""``llava-more chat``: talk to a model about one image, once or turn by turn, streaming each answer.

The model is a llava-more bundle or any other Hugging Face image-text-to-text model; either way it
is prompted through ``llava_more.model.inference``, so a bundle's first turn is exactly the prompt
the lmms-eval plugin evaluates (and its image is prepared the same way).

The image is given once, in the first user turn; later turns carry the history (questions and the
answers given) so follow-up questions work. Decoding is greedy at temperature 0.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from PIL import Image
from transformers import TextStreamer

from llava_more.data.images import load_image as load_image_file
from llava_more.device import resolve_device
from llava_more.errors import UserError
from llava_more.model.inference import (
    BundlePrompter,
    ProcessorPrompter,
    Prompt,
    Prompter,
    cut_at_stops,
    is_bundle,
    quantization_config,
)

EXIT_WORDS = ("exit", "quit", "/exit", "/quit")
RESET_WORDS = ("/reset", "/clear")


# ---------------------------------------------------------------------------------------------- inputs
def load_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as training and evaluation see it (``llava_more.data.images``).

    A missing, unreadable or oversized file is a ``UserError``.
    """
    return load_image_file(path, hint="pass an existing PNG, JPEG or other image Pillow reads with --image")


# ---------------------------------------------------------------------------------------------- models
class ChatModel(Prompter):
    """A prompter in a conversation about one image: ``render`` the history, ``encode`` it with the image."""

    _last: Prompt | None = None

    def render(self, history: Sequence[dict[str, str]]) -> str:
        """The prompt for ``history`` (alternating user/assistant turns ending with a user turn)."""
        # The image goes first in the first user turn; every text stays text (a spelled <image> or
        # control token included). The prompt is kept for encode(): its text alone cannot tell the ids.
        self._last = self.prompt(history, images=1)
        return self._last.text

    def encode(self, prompt: str, image: Image.Image) -> dict[str, torch.Tensor]:
        """``generate`` inputs for ``prompt`` (rendered by ``render``) and the conversation's image."""
        if self._last is None or self._last.text != prompt:
            raise UserError("internal: encode() takes the prompt render() returned for this conversation")
        return self.inputs([self._last], [image])


class BundleChatModel(ChatModel, BundlePrompter):
    """A llava-more bundle, prompted and preprocessed exactly as the lmms-eval plugin evaluates it."""


class ProcessorChatModel(ChatModel, ProcessorPrompter):
    """A Hugging Face image-text-to-text model driven by its ``AutoProcessor`` and the processor's chat template."""


def load_chat_model(
    model: str, *, device: str | None = None, dtype: str | None = "auto", quantization: str | None = None
) -> ChatModel:
    """A bundle folder (has ``llava_more.json``), another HF model folder, or a Hub id, ready to chat.

    ``device`` None or ``auto`` picks CUDA when this job has a usable GPU, else the CPU. ``quantization`` is ``8bit``/``4bit`` (GPU only).
    """
    device = resolve_device(device, purpose="chat")
    quantization_config(quantization, device)  # fail on a bad flag before any slow load
    kind = BundleChatModel if is_bundle(model) else ProcessorChatModel
    return kind(model, device, dtype, quantization=quantization)


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
        max_new_tokens: int,
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
        # The image is placed once, by the model's render; a bundle keeps an <image> the question spells
        # as text.
        question = question.strip()
        if not question:
            raise UserError("empty question; type a question about the image")
        chat = self.chat_model
        turns = [*self.history, {"role": "user", "content": question}]
        prompt = chat.render(turns)
        streamer = _AnswerStreamer(chat.tokenizer, out or sys.stdout, chat.stop_strings)
        (answer,) = chat.generate(
            chat.encode(prompt, self.image),
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            streamer=streamer,
            hint="type /reset to start over",
        )
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
