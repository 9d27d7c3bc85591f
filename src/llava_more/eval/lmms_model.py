"""``llava_more``: the lmms-eval model that evaluates one of our saved bundles.

lmms-eval hands us requests built by its task code; we answer them the way the model was trained:
the bundle's chat template renders the question with the generation prompt (ending with the
assistant header), each image becomes ``<image>`` expanded to the bundle's image-token count, and
images go through the bundle's own image processor (padded to a square with the mean colour when
the model was instruction-tuned with ``image_aspect_ratio=pad``, as LLaVA-1.5 evaluates).

Batching is exact: prompts are LEFT-padded with an attention mask (generation) or right-padded
(log-likelihood), decoding is greedy, and each row stops on its own, so ``--batch_size N`` returns
the same answers as ``--batch_size 1``.

``model_args``: ``pretrained=DIR[,device=cpu][,dtype=float32][,max_new_tokens=N]
[,image_aspect_ratio=pad|square]``. The batch size comes from lmms-eval's own ``--batch_size``
(lmms-eval passes it to the constructor itself, so it must not be repeated in ``model_args``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from llava_more.data.images import as_rgb
from llava_more.errors import UserError
from llava_more.model.preprocess import ASPECT_RATIOS, pixel_values

log = logging.getLogger(__name__)
TIMING_PREFIX = "generate_until timing:"


def _log_info_to_stderr() -> None:
    """Inside ``python -m lmms_eval`` nothing configures Python logging, so our INFO lines (timings)
    would be dropped; send them to stderr, which ``run_lmms_eval`` keeps in ``lmms_eval.log``."""
    package = logging.getLogger("llava_more")
    if logging.getLogger().handlers or package.handlers:
        return  # a host (our CLI, pytest) already decides where logs go
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)


# Used when a task gives no max_new_tokens (LLaVA's own VQA evaluation uses 128).
DEFAULT_MAX_NEW_TOKENS = 128


class _StopOnStrings(StoppingCriteria):
    """Per-row stop when the generated text contains one of the task's ``until`` strings.

    Returning one flag per row lets transformers finish rows independently (finished rows are
    filled with padding), which is what keeps batched answers identical to single ones.
    """

    def __init__(self, tokenizer, prompt_length: int, stops: Sequence[str]):
        self.tokenizer, self.prompt_length, self.stops = tokenizer, prompt_length, list(stops)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


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


class LlavaMoreLMM(lmms):
    """lmms-eval model over a ``llava_more`` bundle (``load_bundle``)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str = "cpu",
        batch_size: int | str = 1,
        max_new_tokens: int | str | None = None,
        dtype: str | None = None,
        image_aspect_ratio: str | None = None,
        max_batch_size: int | None = None,  # lmms-eval passes it; only meaningful for batch_size=auto
        **unknown: Any,
    ) -> None:
        super().__init__()
        _log_info_to_stderr()
        if unknown:
            raise UserError(
                f"--model_args for llava_more: unknown argument(s) {', '.join(sorted(unknown))}; valid: "
                "pretrained, device, dtype, max_new_tokens, image_aspect_ratio (batch size: --batch_size)"
            )
        try:
            self._batch_size = int(batch_size)
        except (TypeError, ValueError):
            raise UserError(f"--batch_size {batch_size!r}: llava_more needs a positive integer") from None
        if self._batch_size < 1:
            raise UserError(f"--batch_size {batch_size!r}: llava_more needs a positive integer")
        self.max_new_tokens_cap = int(max_new_tokens) if max_new_tokens not in (None, "", "None") else None

        from llava_more.model import load_bundle  # heavy: only when a run really uses the model

        torch_dtype = getattr(torch, dtype, None) if dtype else None
        if dtype and not isinstance(torch_dtype, torch.dtype):
            raise UserError(f"dtype={dtype!r}: expected a torch dtype name such as float32 or bfloat16")
        bundle = load_bundle(pretrained, device=device, dtype=torch_dtype)
        self.pretrained = pretrained
        self.bundle = bundle
        self._model = bundle.model.eval()
        self._tokenizer = bundle.tokenizer
        self.image_processor = bundle.image_processor
        self.meta = bundle.meta
        self._device = torch.device(device)

        aspect = image_aspect_ratio or getattr(self.meta, "image_aspect_ratio", None) or "pad"
        if aspect not in ASPECT_RATIOS:
            raise UserError(f"image_aspect_ratio={aspect!r}: expected one of {', '.join(ASPECT_RATIOS)}")
        self.image_aspect_ratio = aspect

        self.image_token_id = self._tokenizer.convert_tokens_to_ids(self.meta.image_token)
        if self.image_token_id is None or self.image_token_id == self._tokenizer.unk_token_id:
            raise UserError(
                f"{pretrained}: the tokenizer has no token {self.meta.image_token!r} (llava_more.json "
                "image_token); rebuild the bundle with the demo tokenizer or the LLM's tokenizer plus that token"
            )
        if self._tokenizer.pad_token_id is None:
            raise UserError(f"{pretrained}: the tokenizer has no pad token; `apply_template` sets one")
        self.stop_token_ids = self._stop_token_ids()
        self.max_positions = self._max_positions()

    # ------------------------------------------------------------------ lmms-eval's interface
    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def eot_token_id(self) -> int:
        return self.stop_token_ids[0]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str | None] = [None] * len(requests)
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            context, gen_kwargs, _, _, task, _ = request.args
            groups[(task, json.dumps(gen_kwargs, sort_keys=True, default=str))].append(i)

        progress = tqdm(total=len(requests), desc="llava_more generate", disable=self.rank != 0)
        prepare_s = generate_s = 0.0
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1])
            mark = time.perf_counter()
            prepared = [self._prepare(requests[i].args[0], *requests[i].args[2:]) for i in indices]
            prepare_s += time.perf_counter() - mark
            # Longest first: padding waste stays low, and an over-long prompt fails at once.
            order = sorted(range(len(indices)), key=lambda k: -len(prepared[k][0]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                mark = time.perf_counter()
                texts = self._generate([prepared[k] for k in chunk], gen_kwargs, requests[indices[chunk[0]]])
                generate_s += time.perf_counter() - mark
                for k, text in zip(chunk, texts, strict=True):
                    answers[indices[k]] = text
                    self.cache_hook.add_partial(
                        "generate_until", (requests[indices[k]].args[0], gen_kwargs), text
                    )
                progress.update(len(chunk))
        progress.close()
        # One line per call, for users and for benchmarks/eval_batching.py: where the time went.
        log.info(
            "%s %d requests at batch %d: prepare %.3f s, generate %.3f s (%.1f samples/s)",
            TIMING_PREFIX, len(requests), self.batch_size, prepare_s, generate_s,
            len(requests) / max(generate_s, 1e-9),
        )  # fmt: skip
        return answers  # type: ignore[return-value]

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        scored: list[tuple[list[int], list[int], list[Image.Image]]] = []
        for request in requests:
            args = request.args
            if len(args) == 2:  # unconditional continuation (acc_mutual_info): no context, no image
                context, continuation, visuals = args[0], args[1], []
            else:
                context, target, doc_to_visual, doc_id, task, split = args
                doc = self.task_dict[task][split][doc_id]
                continuation = target if isinstance(target, str) else target(doc)
                if isinstance(continuation, list):  # doc_to_target may give a list of references
                    continuation = continuation[0]
                visuals = self._visuals(doc_to_visual, doc, task, doc_id) if doc_to_visual else []
            prompt_ids, _ = self._prepare_text(context, len(visuals))
            continuation_ids = self._tokenizer(str(continuation), add_special_tokens=False)["input_ids"]
            if not continuation_ids:
                raise UserError(
                    f"loglikelihood request with an empty continuation (context {context[:60]!r})"
                )
            scored.append((prompt_ids, continuation_ids, visuals))

        results: list[tuple[float, bool] | None] = [None] * len(requests)
        order = sorted(range(len(scored)), key=lambda k: -(len(scored[k][0]) + len(scored[k][1])))
        progress = tqdm(total=len(requests), desc="llava_more loglikelihood", disable=self.rank != 0)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for k, result in zip(chunk, self._loglikelihood_batch([scored[k] for k in chunk]), strict=True):
                results[k] = result
            progress.update(len(chunk))
        progress.close()
        return results  # type: ignore[return-value]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(
            "llava_more answers single-turn tasks only (generate_until, loglikelihood); "
            "multi-round tasks are not part of the LLaVA-MORE benchmark set"
        )

    # ------------------------------------------------------------------ prompts and images
    def _visuals(self, doc_to_visual: Callable, doc: dict, task: str, doc_id: int) -> list[Image.Image]:
        visuals = doc_to_visual(doc) or []
        flat: list[Any] = []
        for item in visuals:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        for item in flat:
            if not isinstance(item, Image.Image):
                raise UserError(
                    f"task {task} doc {doc_id}: llava_more takes images only, got {type(item).__name__} "
                    f"({str(item)[:80]}); video/audio tasks need frames given as PIL images"
                )
        # The picture a viewer shows, as training saw its images (orientation, 16-bit, transparency).
        return [
            as_rgb(item, f"task {task} doc {doc_id}", hint="fix or drop the benchmark image") for item in flat
        ]

    def _prepare_text(self, context: str, num_images: int) -> tuple[list[int], str]:
        """Token ids of the full generation prompt for ``context`` with ``num_images`` images."""
        from llava_more.text import IMAGE_TOKEN, generation_prompt

        question = context
        # Tasks that place images themselves (interleaved formats) already carry the placeholders.
        has_placeholders = question.count(IMAGE_TOKEN)
        if has_placeholders and has_placeholders != num_images:
            raise UserError(
                f"prompt has {has_placeholders} {IMAGE_TOKEN} placeholders for {num_images} images: {context[:80]!r}"
            )
        if num_images and not has_placeholders:
            prompt = generation_prompt(self._tokenizer, self.meta.template, question, has_image=True)
            present = prompt.count(IMAGE_TOKEN)
            if present == 0:
                raise UserError(f"template {self.meta.template!r} dropped the image placeholder")
            if present < num_images:  # several images: one placeholder each, where the template put one
                prompt = prompt.replace(IMAGE_TOKEN, "\n".join([IMAGE_TOKEN] * (num_images - present + 1)), 1)
        else:
            prompt = generation_prompt(self._tokenizer, self.meta.template, question, has_image=False)
        expanded = prompt.replace(IMAGE_TOKEN, self.meta.image_token * self.meta.image_tokens)
        ids = self._tokenizer(expanded, add_special_tokens=False)["input_ids"]
        found = sum(1 for t in ids if t == self.image_token_id)
        if found != num_images * self.meta.image_tokens:
            raise UserError(
                f"the prompt holds {found} image tokens for {num_images} image(s) x {self.meta.image_tokens}; "
                f"the tokenizer must keep {self.meta.image_token!r} as one special token"
            )
        return ids, prompt

    def _pixel_values(self, images: list[Image.Image]) -> torch.Tensor | None:
        if not images:
            return None
        values = pixel_values(self.image_processor, images, self.image_aspect_ratio)
        return values.to(self._device, dtype=self._model.dtype)

    def _prepare(self, context, doc_to_visual, doc_id, task, split) -> tuple[list[int], list[Image.Image]]:
        doc = self.task_dict[task][split][doc_id]
        visuals = self._visuals(doc_to_visual, doc, task, doc_id) if doc_to_visual else []
        ids, _ = self._prepare_text(context, len(visuals))
        return ids, visuals

    # ------------------------------------------------------------------ the model
    def _stop_token_ids(self) -> list[int]:
        """End-of-turn ids: the template's stop tokens, the tokenizer's eos and the generation config's."""
        from llava_more.text import get_template

        template = get_template(self.meta.template)
        ids = stop_token_ids(self._tokenizer, self._model, template.stop_tokens)
        if not ids:
            raise UserError(
                f"{self.pretrained}: the tokenizer has no eos token, so generation could never stop"
            )
        self.template_stop_strings = list(template.stop_strings)
        return ids

    def _max_positions(self) -> int | None:
        config = getattr(self._model.config, "text_config", self._model.config)
        return getattr(config, "max_position_embeddings", None)

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        pad = self._tokenizer.pad_token_id
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        return ids.to(self._device), mask.to(self._device)

    def _generate(self, batch, gen_kwargs: dict, first: Instance) -> list[str]:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        until += [s for s in self.template_stop_strings if s not in until]
        if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0) or 0) > 0:
            log.warning("task %s asks for sampling; llava_more decodes greedily", first.args[4])
        max_new = int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        if self.max_new_tokens_cap is not None:
            max_new = min(max_new, self.max_new_tokens_cap)
        prompt_length = max(len(ids) for ids, _ in batch)
        if self.max_positions is not None:
            if prompt_length >= self.max_positions:
                raise UserError(
                    f"task {first.args[4]}: a prompt of {prompt_length} tokens does not fit the model's "
                    f"{self.max_positions} positions; evaluate with a model of longer context"
                )
            max_new = min(max_new, self.max_positions - prompt_length)

        input_ids, attention_mask = self._left_pad([ids for ids, _ in batch])
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        pixel_values = self._pixel_values([image for _, images in batch for image in images])
        if pixel_values is not None:
            inputs["pixel_values"] = pixel_values
        stopping = (
            StoppingCriteriaList([_StopOnStrings(self._tokenizer, input_ids.shape[1], until)])
            if until
            else None
        )
        with torch.inference_mode():
            output = self._model.generate(
                **inputs,
                max_new_tokens=max_new,
                do_sample=False,
                num_beams=1,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=self.stop_token_ids,
                pad_token_id=self._tokenizer.pad_token_id,
                stopping_criteria=stopping,
            )
        new_tokens = output[:, input_ids.shape[1] :]
        texts = self._tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [cut_at_stops(text, until).strip() for text in texts]

    def _loglikelihood_batch(self, batch) -> list[tuple[float, bool]]:
        sequences = [prompt + continuation for prompt, continuation, _ in batch]
        width = max(len(s) for s in sequences)
        pad = self._tokenizer.pad_token_id
        # Right padding: real tokens keep positions 0..n-1, exactly as when scored alone.
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        inputs: dict[str, Any] = {"input_ids": ids.to(self._device), "attention_mask": mask.to(self._device)}
        pixel_values = self._pixel_values([image for _, _, images in batch for image in images])
        if pixel_values is not None:
            inputs["pixel_values"] = pixel_values
        with torch.inference_mode():
            logits = self._model(**inputs).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        results = []
        for row, (prompt, continuation, _) in enumerate(batch):
            # logits at position t predict token t+1
            positions = torch.arange(
                len(prompt) - 1, len(prompt) + len(continuation) - 1, device=log_probs.device
            )
            targets = torch.tensor(continuation, device=log_probs.device)
            token_log_probs = log_probs[row, positions].gather(-1, targets[:, None]).squeeze(-1)
            greedy = bool((log_probs[row, positions].argmax(-1) == targets).all())
            results.append((float(token_log_probs.sum()), greedy))
        return results
