"""Tiny twins of published LLaVA checkpoints in the original LLaVA code's format, and that code's way
of running them, both written from the format itself (never from llava-more's converter).

A twin holds what such a release holds: ``config.json`` (the LLM's config under a ``llava_*`` model type,
plus ``mm_*``, ``image_aspect_ratio`` and LLaVA-MORE's ``s2``/``s2_scales``/``siglip`` fields), sharded
safetensors with the LLM's own keys beside ``model.mm_projector.{0,2}.*`` (and, when it carries its
tower, ``model.vision_tower.vision_tower.*``), and the tokenizer files the LLM's tokenizer saves:
``tokenizer.json`` for Llama-3.1, a SentencePiece ``tokenizer.model`` for Gemma-2, GPT-2-style
``vocab.json``/``merges.txt``/``added_tokens.json`` for Phi-4-mini. Towers are saved as their Hub repos
are (a full CLIP/SigLIP model with ``preprocessor_config.json``), in folders named like the Hub ids.

``OriginalLlava`` loads a twin as the LLaVA code does (the tower from ``mm_vision_tower``, features from
``mm_vision_select_layer`` with the family's prefix tokens dropped, S2 as ``s2wrapper`` computes it,
image features spliced in place of the ``-200`` image marker) and is the reference the imported
bundles are compared with.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import sentencepiece as spm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import (
    CONFIG_MAPPING,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionModel,
    Dinov2WithRegistersModel,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipVisionModel,
)

from llava_more.model import get_llm, get_vision

IMAGE_MARKER = -200  # the LLaVA code's IMAGE_TOKEN_INDEX: not a vocabulary id
CORPUS = [
    "What color is the big shape? Answer the question using a single word or phrase.",
    "The red square is left of the blue circle, and a green triangle sits below them.",
    "Describe the image in detail. There are three shapes on a white background.",
    "You are a helpful assistant for language and vision tasks of every kind.",
    "Yes No A B C D one two three four colour color count left right top bottom",
] * 20

# The LLaVA code's conversation templates' system prompts (what each family's checkpoint saw).
LLAMA31_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
PHI4_SYSTEM = "You are a helpful AI assistant."

# Llama-3.1 Instruct's chat template as Meta's tokenizer_config.json carries it (no tools): the
# knowledge-date lines open every system turn.
LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}{{- "Today Date: 26 Jul 2024\\n\\n" }}'
    '{{- system_message }}{{- "<|eot_id|>" }}'
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
GEMMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

FAMILY_FORMAT = {
    # transformers model type -> (LLaVA model type, class, model_architecture, tokenizer kind)
    "llama": ("llava_llama", "LlavaLlamaForCausalLM", "llama_3_1", "llama3"),
    "gemma2": ("llava_gemma", "LlavaGemmaForCausalLM", "gemma_2", "gemma"),
    "phi3": ("llava_phi", "LlavaPhiForCausalLM", "phi_4", "phi4"),
}
LLM_NAME_OR_PATH = {  # where LLaVA-MORE's training scripts point model_name_or_path: a cluster folder
    "llama3.1-8b": "/leonardo_work/models/Meta-Llama-3.1-8B-Instruct",
    "gemma2-9b": "/leonardo_work/models/gemma-2-9b-it",
    "phi4-mini": "/leonardo_work/models/Phi-4-mini-instruct",
}


# ---------------------------------------------------------------------------------------------- tokenizers
def _byte_bpe(special_tokens: list[str], vocab_size: int = 400) -> Tokenizer:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return backend


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def llama3_release_tokenizer(out: Path) -> None:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json, BOS added on encode, Meta's template."""
    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|finetune_right_pad_id|>",
    ]
    backend = _byte_bpe(specials)
    bos_id = backend.token_to_id("<|begin_of_text|>")
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",  # LLaVA-MORE trains Llama-3.1 with pad id 128004
    )
    tokenizer.save_pretrained(out)
    # Releases saved by transformers 4.x keep the chat template inside tokenizer_config.json.
    config = json.loads((out / "tokenizer_config.json").read_text())
    _write_json(out / "tokenizer_config.json", config | {"chat_template": LLAMA31_CHAT_TEMPLATE})
    _write_json(
        out / "special_tokens_map.json",
        {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "pad_token": "<|finetune_right_pad_id|>",
        },
    )


def gemma_release_tokenizer(out: Path) -> None:
    """A SentencePiece tokenizer.model (no tokenizer.json: the slow GemmaTokenizer saves none)."""
    out.mkdir(parents=True, exist_ok=True)
    corpus = out.parent / f".{out.name}-corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "tokenizer"),
        vocab_size=360,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        byte_fallback=True,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "GemmaTokenizer",
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "chat_template": GEMMA2_CHAT_TEMPLATE,
        },
    )
    _write_json(
        out / "special_tokens_map.json",
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
    )


def phi4_release_tokenizer(out: Path) -> None:
    """GPT-2-style vocab.json + merges.txt + added_tokens.json (the slow tokenizer Phi-4-mini saves)."""
    out.mkdir(parents=True, exist_ok=True)
    backend = _byte_bpe(["<|endoftext|>"])
    backend.model.save(str(out))
    base = backend.get_vocab_size()
    added = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    _write_json(out / "added_tokens.json", {t: base + i for i, t in enumerate(added)})
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "GPT2Tokenizer",
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "added_tokens_decoder": {
                str(base + i): {
                    "content": t, "special": True, "lstrip": False, "rstrip": False,
                    "normalized": False, "single_word": False,
                }
                for i, t in enumerate(added)
            },
        },
    )  # fmt: skip
    _write_json(
        out / "special_tokens_map.json",
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    )


RELEASE_TOKENIZERS = {
    "llama3": llama3_release_tokenizer,
    "gemma": gemma_release_tokenizer,
    "phi4": phi4_release_tokenizer,
}


# ---------------------------------------------------------------------------------------------- towers
def save_tower(vision_id: str, root: Path, seed: int = 0) -> Path:
    """A tiny tower saved as its Hub repo is (full CLIP/SigLIP model, or DINOv2), in a folder named like it."""
    spec = get_vision(vision_id)
    out = root / spec.hf_id.rsplit("/", 1)[-1]
    if out.exists():
        return out
    torch.manual_seed(seed)
    vision = spec.config("tiny")
    side = spec.image_size("tiny")
    if spec.family == "clip_vision_model":
        text = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 64,
        }
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision.to_dict(), projection_dim=32))
        processor = CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}, do_center_crop=True,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        )  # fmt: skip
    elif spec.family == "siglip_vision_model":
        text = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 64,
        }
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision.to_dict()))
        processor = SiglipImageProcessor(size={"height": side, "width": side})
    else:
        model = spec.model_class(vision)
        processor = spec.image_processor("tiny")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _tower_class(vision_tower: str, config: dict) -> type:
    """Which tower class the LLaVA-MORE builder picks for this name and these flags."""
    if "dino" in vision_tower and "registers" in vision_tower:
        return Dinov2WithRegistersModel
    if "dino" in vision_tower:
        return AutoModel
    return SiglipVisionModel if config.get("siglip") else CLIPVisionModel


def _dropped_prefix(tower_class: type, feature: str) -> int:
    if feature == "cls_patch":
        return 0
    return {SiglipVisionModel: 0, Dinov2WithRegistersModel: 5}.get(tower_class, 1)


# ---------------------------------------------------------------------------------------------- checkpoints
def write_original_checkpoint(
    out: Path,
    *,
    llm_id: str,
    tower_dir: Path,
    s2_scales: tuple[int, ...] | None = None,
    carry_tower: bool = False,
    shards: int = 2,
    seed: int = 0,
    spare_rows: int = 0,
    mm_vision_tower: str | None = None,
) -> Path:
    """A fine-tuned release of ``llm_id`` x the tower in ``tower_dir``, as the LLaVA code saves it."""
    spec = get_llm(llm_id)
    llava_type, architecture, model_architecture, tokenizer_kind = FAMILY_FORMAT[spec.family]
    out.mkdir(parents=True, exist_ok=True)
    RELEASE_TOKENIZERS[tokenizer_kind](out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    text_config = spec.config("tiny", vocab_size=len(tokenizer) + spare_rows)
    text_config.bos_token_id, text_config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    torch.manual_seed(seed)
    llm = AutoModelForCausalLM.from_config(text_config)
    tower_config = json.loads((tower_dir / "config.json").read_text())
    tower_hidden = tower_config.get("vision_config", tower_config)["hidden_size"]
    mm_hidden = tower_hidden * (len(s2_scales) if s2_scales else 1)
    hidden = text_config.hidden_size

    state = {
        k: v for k, v in llm.state_dict().items() if not (spec.tie_word_embeddings and k == "lm_head.weight")
    }
    state["model.mm_projector.0.weight"] = torch.randn(hidden, mm_hidden) * 0.1
    state["model.mm_projector.0.bias"] = torch.randn(hidden) * 0.1
    state["model.mm_projector.2.weight"] = torch.randn(hidden, hidden) * 0.1
    state["model.mm_projector.2.bias"] = torch.randn(hidden) * 0.1
    is_siglip = "siglip" in tower_dir.name
    if carry_tower:
        tower = _tower_class(tower_dir.name, {"siglip": is_siglip}).from_pretrained(tower_dir)
        state |= {f"model.vision_tower.vision_tower.{k}": v for k, v in tower.state_dict().items()}
    write_shards(out, state, shards)

    config = {k: v for k, v in text_config.to_dict().items() if k not in ("model_type", "architectures")}
    config |= {
        "_name_or_path": LLM_NAME_OR_PATH.get(llm_id, spec.hf_id),
        "architectures": [architecture],
        "model_type": llava_type,
        "model_architecture": model_architecture,
        "torch_dtype": "float32",
        "mm_vision_tower": mm_vision_tower or str(tower_dir),
        "mm_hidden_size": mm_hidden,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "flat",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_projector_lr": None,
        "image_aspect_ratio": "pad",
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "use_mm_proj": True,
        "use_cache": True,
    }
    if is_siglip:
        config["siglip"] = True
    if s2_scales:
        config |= {"s2": True, "s2_scales": ",".join(str(s) for s in s2_scales)}
    _write_json(out / "config.json", config)
    return out


def write_shards(out: Path, state: dict[str, torch.Tensor], shards: int) -> None:
    """``model-0000i-of-0000n.safetensors`` and their index, as ``save_pretrained`` shards."""
    keys = sorted(state)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {key: names[index * shards // len(keys)] for index, key in enumerate(keys)}
    for name in names:
        part = {k: state[k].contiguous() for k in keys if weight_map[k] == name}
        save_file(part, str(out / name), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in state.values())
    _write_json(
        out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        state |= load_file(str(file))
    for file in [*sorted(folder.glob("pytorch_model*.bin")), *folder.glob("mm_projector.bin")]:
        state |= torch.load(file, weights_only=True)
    return state


# ---------------------------------------------------------------------------------------------- reference
_LLAVA_KEYS = {
    "architectures", "model_type", "_name_or_path", "transformers_version", "model_architecture",
    "image_aspect_ratio", "tokenizer_model_max_length", "tokenizer_padding_side", "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter", "use_mm_proj", "s2", "s2_scales", "siglip",
}  # fmt: skip
_LLM_TYPES = {"llava_llama": "llama", "llava_gemma": "gemma2", "llava_phi": "phi3"}


class OriginalLlava:
    """A checkpoint run the way the LLaVA(-MORE) code runs it; ``llm_base`` for pretrain-only releases."""

    def __init__(self, folder: Path, llm_base: Path | None = None):
        self.config = config = json.loads((folder / "config.json").read_text())
        state = read_state(folder)
        if llm_base is not None:
            state = read_state(llm_base) | state
        text = {k: v for k, v in config.items() if k not in _LLAVA_KEYS and not k.startswith("mm_")}
        self.lm = AutoModelForCausalLM.from_config(
            CONFIG_MAPPING[_LLM_TYPES[config["model_type"]]].from_dict(text)
        )
        # inv_freq: a buffer the transformers of LLaVA-1.5's time saved; it is recomputed, not loaded.
        llm_state = {
            k: v
            for k, v in state.items()
            if not k.startswith(("model.mm_projector.", "model.vision_tower.")) and not k.endswith("inv_freq")
        }
        missing, unexpected = self.lm.load_state_dict(llm_state, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
        self.lm.tie_weights()
        hidden = self.lm.config.hidden_size
        self.projector = nn.Sequential(
            nn.Linear(config["mm_hidden_size"], hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.projector.load_state_dict(
            {
                k.removeprefix("model.mm_projector."): v
                for k, v in state.items()
                if k.startswith("model.mm_projector.")
            }
        )
        tower_path = config["mm_vision_tower"]
        tower_class = _tower_class(tower_path, config)
        self.tower = tower_class.from_pretrained(
            tower_path
        )  # delay_load: the checkpoint's tower keys are unused
        self.drop = _dropped_prefix(tower_class, config.get("mm_vision_select_feature", "patch"))
        self.layer = config["mm_vision_select_layer"]
        self.scales = sorted(int(s) for s in config["s2_scales"].split(",")) if config.get("s2") else None
        if tower_class is SiglipVisionModel:
            self.processor = SiglipImageProcessor.from_pretrained(tower_path)
            if self.scales:
                self.processor.size = {"height": self.scales[-1], "width": self.scales[-1]}
        elif tower_class is CLIPVisionModel:
            self.processor = CLIPImageProcessor.from_pretrained(tower_path)
            if self.scales:
                self.processor.size = {"shortest_edge": self.scales[-1]}
                self.processor.crop_size = {"height": self.scales[-1], "width": self.scales[-1]}
        else:
            self.processor = AutoImageProcessor.from_pretrained(tower_path)
        for module in (self.lm, self.projector, self.tower):
            module.eval()

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """``process_images``: pad to a square of the mean colour (truncated to ints), then preprocess."""
        if self.config.get("image_aspect_ratio") == "pad":
            background = tuple(int(x * 255) for x in self.processor.image_mean)
            width, height = image.size
            side = max(width, height)
            canvas = Image.new(image.mode, (side, side), background)
            canvas.paste(image, ((side - width) // 2, (side - height) // 2))
            image = canvas
        return self.processor.preprocess(image, return_tensors="pt")["pixel_values"]

    def _select(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixels, output_hidden_states=True).hidden_states[self.layer]
        return hidden[:, self.drop :]

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.scales:
            return self.projector(self._select(pixels))
        # s2wrapper.forward with img_sizes=scales and max_split_size=the smallest scale
        batch, split = pixels.shape[0], self.scales[0]
        maps = []
        for size in self.scales:
            x = F.interpolate(pixels.float(), size=size, mode="bicubic").to(pixels.dtype)
            n = math.ceil(size / split)
            tiles = (
                x.reshape(batch, 3, n, split, n, split)
                .permute(2, 4, 0, 1, 3, 5)
                .reshape(n * n * batch, 3, split, split)
            )
            out = self._select(tiles)
            side = int(out.shape[1] ** 0.5)
            out = out.reshape(n * n * batch, side, side, -1).permute(0, 3, 1, 2)
            out = (
                out.reshape(n, n, batch, -1, side, side)
                .permute(2, 3, 0, 4, 1, 5)
                .reshape(batch, -1, n * side, n * side)
            )
            maps.append(out)
        grid = maps[0].shape[-1]
        merged = torch.cat(
            [F.interpolate(m.float(), size=grid, mode="area").to(m.dtype) for m in maps], dim=1
        )
        return self.projector(merged.flatten(2).transpose(1, 2))

    def logits(self, input_ids: list[int], pixels: torch.Tensor) -> torch.Tensor:
        """``prepare_inputs_labels_for_multimodal`` + the LLM: image features replace the ``-200`` marker."""
        features = self.image_features(pixels)
        pieces, image_index, start = [], 0, 0
        embed = self.lm.get_input_embeddings()
        for position, token in enumerate([*input_ids, None]):
            if token == IMAGE_MARKER or token is None:
                pieces.append(embed(torch.tensor(input_ids[start:position], dtype=torch.long)))
                if token is not None:
                    pieces.append(features[image_index])
                    image_index += 1
                start = position + 1
        return self.lm(inputs_embeds=torch.cat(pieces)[None]).logits

    def tokenize(self, prompt: str, tokenizer) -> list[int]:
        """``tokenizer_image_token``, then the evaluation wrapper's removal of a doubled BOS."""
        chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
        ids: list[int] = []
        offset = 0
        if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
            offset = 1
            ids.append(chunks[0][0])
        for index, chunk in enumerate(chunks):
            if index:
                ids.append(IMAGE_MARKER)
            ids.extend(chunk[offset:])
        if len(ids) > 1 and ids[0] == ids[1] == tokenizer.bos_token_id:
            ids = ids[1:]
        return ids


def original_prompt(family: str, tokenizer, question: str) -> str:
    """The prompt the LLaVA-MORE conversation templates build before the answer (``<image>`` first)."""
    content = f"<image>\n{question}"
    if family == "llama":  # LLAMA_3_1: the tokenizer's own template with the vision system prompt
        messages = [{"role": "system", "content": LLAMA31_SYSTEM}, {"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if family == "gemma2":  # GEMMA_2: the tokenizer's own template, no system turn
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    if family == "phi3":  # MPT style: system + sep, then role + message + sep per turn, open assistant role
        return f"<|system|>{PHI4_SYSTEM}<|end|><|user|>{content}<|end|><|assistant|>"
    raise ValueError(family)
