"""Training samples, the collator and the seeded, modality/length-grouped sampler."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tokenizers import normalizers

from llava_more.data.llava_json import LlavaJsonDataset
from llava_more.model.preprocess import expand_to_square
from llava_more.text import IMAGE_TOKEN
from llava_more.text.encode import IGNORE_INDEX
from llava_more.train.dataset import LlavaCollator, LlavaTrainDataset
from llava_more.train.sampler import SeededGroupedSampler
from tests.test_train_helpers import make_dataset


@pytest.fixture(scope="module")
def data_json(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_images=6, n_text=3)


def train_set(bundle, data_json, template="llama3.1", aspect="pad", max_length=1024, cache_dir=None):
    return LlavaTrainDataset(
        LlavaJsonDataset(data_json, data_json.parent),
        bundle.tokenizer,
        bundle.image_processor,
        template_id=template,
        num_image_tokens=bundle.meta.image_tokens,
        max_length=max_length,
        image_aspect_ratio=aspect,
        cache_dir=cache_dir,
    )


def test_expand_to_square_pads_with_the_background_and_keeps_content():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    square = expand_to_square(image, (1, 2, 3))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (1, 2, 3) and square.getpixel((20, 20)) == (255, 0, 0)
    assert expand_to_square(square, (0, 0, 0)) is square


def test_items_have_image_tokens_matching_features(bundle, data_json, tmp_path):
    dataset = train_set(bundle, data_json, cache_dir=tmp_path)
    image_id = bundle.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert len(dataset) == 9
    assert [n > 0 for n in dataset.lengths] == [True] * 6 + [False] * 3  # text-only lengths are negative
    image_item, text_item = dataset[0], dataset[6]
    assert int((image_item["input_ids"] == image_id).sum()) == bundle.meta.image_tokens
    size = bundle.image_processor.crop_size["height"]
    assert image_item["pixel_values"].shape == (3, size, size)
    assert "pixel_values" not in text_item and image_id not in text_item["input_ids"]
    assert abs(dataset.lengths[0]) == len(image_item["input_ids"])
    assert (image_item["labels"] != IGNORE_INDEX).any()
    # the scan is cached: a second dataset reads it
    assert len(list(tmp_path.glob("scan-*.json"))) == 1
    assert train_set(bundle, data_json, cache_dir=tmp_path).lengths == dataset.lengths


def test_scan_cache_is_keyed_by_what_the_lengths_depend_on(bundle, data_json, tmp_path):
    import copy

    first = train_set(bundle, data_json, cache_dir=tmp_path)
    # a tokenizer of the same size that encodes the text differently must not reuse the scan
    other = copy.deepcopy(bundle.tokenizer)
    other.backend_tokenizer.normalizer = normalizers.Replace(" ", "  ")
    assert len(other) == len(bundle.tokenizer)
    retokenized = LlavaTrainDataset(
        LlavaJsonDataset(data_json, data_json.parent),
        other,
        bundle.image_processor,
        template_id="llama3.1",
        num_image_tokens=bundle.meta.image_tokens,
        max_length=1024,
        image_aspect_ratio="pad",
        cache_dir=tmp_path,
    )
    assert len(list(tmp_path.glob("scan-*.json"))) == 2
    assert retokenized._scan_key() != first._scan_key()
    # a different template with the same tokenizer is a new key too
    train_set(bundle, data_json, template="plain", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("scan-*.json"))) == 3
    # the same inputs read the cache: a planted result comes back unchanged
    (cached,) = [p for p in tmp_path.glob("scan-*.json") if first._scan_key() in p.name]
    cached.write_text('{"indices": [0], "lengths": [7]}')
    assert train_set(bundle, data_json, cache_dir=tmp_path).lengths == [7]


def test_pad_and_square_differ_only_in_padding(bundle, data_json):
    # image 1 is 48x48 ... image 0 is 40x48: padded to square with the mean colour vs stretched
    padded, squared = (
        train_set(bundle, data_json, aspect="pad")[0],
        train_set(bundle, data_json, aspect="square")[0],
    )
    assert not torch.equal(padded["pixel_values"], squared["pixel_values"])
    # a normalised mean colour is ~0 in every channel: the padded border is (nearly) zero
    assert padded["pixel_values"][:, :, 0].abs().max() < 0.05
    assert squared["pixel_values"][:, :, 0].abs().max() > 0.5


def test_too_long_samples_are_dropped(bundle, data_json):
    # stage 1 (plain template): image samples are ~45 tokens, text-only ones ~15
    dataset = train_set(bundle, data_json, template="plain", max_length=30)
    assert len(dataset) == 3 and all(n < 0 for n in dataset.lengths)


def test_collator_pads_right_and_stacks_only_real_images(bundle, data_json):
    dataset = train_set(bundle, data_json)
    collate = LlavaCollator(pad_token_id=bundle.tokenizer.pad_token_id)
    batch = collate([dataset[6], dataset[0]])  # text-only first, then an image sample
    longest = max(len(dataset[6]["input_ids"]), len(dataset[0]["input_ids"]))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, longest)
    short = len(dataset[6]["input_ids"])
    assert (batch["input_ids"][0, short:] == bundle.tokenizer.pad_token_id).all()
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][0].sum() == short and batch["attention_mask"][1].sum() == longest
    assert batch["pixel_values"].shape[0] == 1
    # the real model accepts a mixed batch (features are matched to image tokens over the batch)
    out = bundle.model(**batch)
    assert torch.isfinite(out.loss)


def test_placeholder_row_only_for_imageless_batches(bundle, data_json):
    dataset = train_set(bundle, data_json)
    collate = LlavaCollator(
        pad_token_id=bundle.tokenizer.pad_token_id, placeholder=dataset.placeholder_sample()
    )
    text_batch = collate([dataset[6], dataset[7]])
    assert text_batch["input_ids"].shape[0] == 3 and text_batch["pixel_values"].shape[0] == 1
    assert (text_batch["labels"][2] == IGNORE_INDEX).all()  # the placeholder is never supervised
    assert collate([dataset[0], dataset[6]])["input_ids"].shape[0] == 2
    # the placeholder changes neither the loss nor the gradients of the real rows
    plain = LlavaCollator(pad_token_id=bundle.tokenizer.pad_token_id)([dataset[6], dataset[7]])
    with_row, without_row = bundle.model(**text_batch).loss, bundle.model(**plain).loss
    torch.testing.assert_close(with_row, without_row)


def test_sampler_order_depends_only_on_seed_and_epoch():
    lengths = [5, 9, -3, 7, -8, 2, 11, -4, 6, 3]
    sampler = SeededGroupedSampler(lengths, seed=1, group_by_length=False, group_size=2)
    torch.manual_seed(123)  # the global RNG must not matter
    first = list(sampler)
    torch.manual_seed(999)
    assert list(sampler) == first and sorted(first) == list(range(10))
    sampler.set_epoch(1)
    assert list(sampler) != first
    other_seed = SeededGroupedSampler(lengths, seed=2, group_by_length=False, group_size=2)
    assert list(other_seed) != first


def test_grouped_sampler_keeps_modalities_apart_and_lengths_close():
    lengths = [10, 200, 30, 180, -50, -60, 20, 190, -40, -70, 15, 170, 25, 160, -55, -65]
    sampler = SeededGroupedSampler(lengths, seed=0, group_by_length=True, group_size=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(lengths)))
        groups = [order[i : i + 4] for i in range(0, len(order), 4)]
        # 10 image + 6 text-only samples in groups of 4: 2 + 1 pure groups, then the 2 + 2 leftovers mixed
        assert [len({lengths[i] > 0 for i in g}) for g in groups] == [1, 1, 1, 2]
        for group in groups[:-1]:
            signs = {lengths[i] > 0 for i in group}
            assert len(signs) == 1, f"group {group} mixes image and text-only samples"
            sizes = [abs(lengths[i]) for i in group]
            assert sizes == sorted(sizes, reverse=True)  # longest first within a group


def test_samples_kept_in_memory_are_the_same_and_not_shared(bundle, data_json, monkeypatch):
    dataset = train_set(bundle, data_json)
    first = dataset[0]
    first["input_ids"][0] = -1  # a caller (the collator) may write into what it got
    again = dataset[0]
    assert 0 in dataset._memo and again["input_ids"][0] != -1
    fresh = train_set(bundle, data_json)
    monkeypatch.setattr("llava_more.train.dataset.MEMO_BYTES", 0)  # over budget: read from disk
    uncached = train_set(bundle, data_json)
    for key in again:
        assert torch.equal(again[key], fresh[0][key]) and torch.equal(again[key], uncached[0][key])
    assert not uncached._memo
