"""``llava_more``: the lmms-eval model that evaluates one of our saved bundles.

lmms-eval hands us requests built by its task code; we answer them the way the model was trained,
through ``llava_more.model.inference.BundlePrompter``: the bundle's chat template renders the
question with the generation prompt (ending with the assistant header), each image becomes
``<image>`` expanded to the bundle's image-token count, and images go through the bundle's own
image processor (padded to a square with the mean colour when the model was instruction-tuned with
``image_aspect_ratio=pad``, as LLaVA-1.5 evaluates).

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
from collections.abc import Callable
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from llava_more.data.images import as_rgb
from llava_more.errors import UserError
from llava_more.model.inference import BundlePrompter, Prompt, pad

logger = logging.getLogger(__name__)
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

        self.prompter = BundlePrompter(pretrained, device, dtype, image_aspect_ratio=image_aspect_ratio)
        self.pretrained = pretrained
        self.meta = self.prompter.meta
        self.image_token_id = self.prompter.image_token_id
        self._device = torch.device(device)

    # ------------------------------------------------------------------ lmms-eval's interface
    @property
    def model(self):
        return self.prompter.model

    @property
    def tokenizer(self):
        return self.prompter.tokenizer

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def eot_token_id(self) -> int:
        return self.prompter.stop_token_ids[0]

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
            order = sorted(range(len(indices)), key=lambda k: -len(prepared[k][0].input_ids))
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
        logger.info(
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
            continuation_ids = self.tokenizer(str(continuation), add_special_tokens=False)["input_ids"]
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

    def _prompt(self, context: str, num_images: int) -> Prompt:
        """The full generation prompt for ``context`` with ``num_images`` images.

        The images go first in the user turn (one slot each, expanded to the bundle's image-token count);
        the context is text: an ``<image>`` or a control token it spells is tokenized as text.
        """
        return self.prompter.prompt([{"role": "user", "content": context}], num_images)

    def _prepare_text(self, context: str, num_images: int) -> tuple[list[int], str]:
        """Token ids and text of the generation prompt for ``context`` (``_prompt``)."""
        prompt = self._prompt(context, num_images)
        return prompt.input_ids, prompt.text

    def _pixel_values(self, images: list[Image.Image]) -> torch.Tensor | None:
        return self.prompter.pixel_values(images)

    def _prepare(self, context, doc_to_visual, doc_id, task, split) -> tuple[Prompt, list[Image.Image]]:
        doc = self.task_dict[task][split][doc_id]
        visuals = self._visuals(doc_to_visual, doc, task, doc_id) if doc_to_visual else []
        return self._prompt(context, len(visuals)), visuals

    # ------------------------------------------------------------------ the model
    def _generate(
        self, batch: list[tuple[Prompt, list[Image.Image]]], gen_kwargs: dict, first: Instance
    ) -> list[str]:
        task = first.args[4]
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        until += [s for s in self.prompter.stop_strings if s not in until]
        if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0) or 0) > 0:
            logger.warning("task %s asks for sampling; llava_more decodes greedily", task)
        max_new = int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        if self.max_new_tokens_cap is not None:
            max_new = min(max_new, self.max_new_tokens_cap)
        return self.prompter.answer(
            [prompt for prompt, _ in batch],
            [image for _, images in batch for image in images],
            max_new_tokens=max_new,
            stop_strings=until,
            hint=f"evaluate task {task} with a model of longer context",
        )

    def _loglikelihood_batch(self, batch) -> list[tuple[float, bool]]:
        sequences = [prompt + continuation for prompt, continuation, _ in batch]
        # Right padding: real tokens keep positions 0..n-1, exactly as when scored alone.
        ids, mask = pad(sequences, self.tokenizer.pad_token_id, side="right")
        inputs: dict[str, Any] = {"input_ids": ids.to(self._device), "attention_mask": mask.to(self._device)}
        pixel_values = self._pixel_values([image for _, _, images in batch for image in images])
        if pixel_values is not None:
            inputs["pixel_values"] = pixel_values
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
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
