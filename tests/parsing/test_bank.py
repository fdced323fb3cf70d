from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlpart.parsing import BaseBank, BaseObject
from vlpart.parsing.bank import bank_paths
from vlpart.parsing.features import prepare_masks


def test_build_stores_normalised_features_masks_and_metadata(dino_random, make_base_object):
    objects = [make_base_object(48, 64), make_base_object(64, 40, "dog", seed=1)]
    bank = BaseBank.build(objects, dino_random, image_size=32, batch_size=1)
    assert len(bank) == 2 and bank.image_size == 32 and (bank.stride, bank.patch_size) == (8, 8)
    assert bank.cls.shape == (2, 384) and bank.dense.shape == (2, 4, 4, 384)
    torch.testing.assert_close(bank.dense.norm(dim=-1), torch.ones(2, 4, 4))
    assert bank.masks.shape == (6, 32, 32) and bank.masks.dtype == torch.bool
    assert torch.equal(bank.part_masks(1), prepare_masks(objects[1].part_masks, 32))
    assert bank.entries[1].part_names == ("dog:head", "dog:torso", "dog:tail")
    assert bank.foreground.dtype == torch.bool and bank.foreground.any(dim=(1, 2)).all()
    batched = BaseBank.build(objects, dino_random, image_size=32, batch_size=2)
    torch.testing.assert_close(batched.dense, bank.dense, rtol=1e-4, atol=1e-5)


def test_save_load_round_trip_is_exact(tmp_path, dino_random, make_base_object):
    bank = BaseBank.build(
        [make_base_object(40, 40), make_base_object(40, 56, seed=2)], dino_random, image_size=32
    )
    bank.save(tmp_path / "banks" / "base.safetensors")
    tensors, meta = bank_paths(tmp_path / "banks" / "base")
    assert tensors.is_file() and meta.is_file()
    assert not list((tmp_path / "banks").glob("*.tmp"))
    assert json.loads(meta.read_text())["entries"][0]["part_names"] == [
        "cat:head",
        "cat:torso",
        "cat:tail",
    ]
    loaded = BaseBank.load(tmp_path / "banks" / "base.json")
    for name in ("cls", "dense", "foreground", "masks"):
        assert torch.equal(getattr(loaded, name), getattr(bank, name)), name
    assert loaded.entries == bank.entries
    assert (loaded.extractor, loaded.image_size, loaded.stride) == (bank.extractor, 32, 8)


def test_load_errors_name_the_file(tmp_path, dino_random, make_base_object):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        BaseBank.load(tmp_path / "missing")
    bank = BaseBank.build([make_base_object(32, 32)], dino_random, image_size=32)
    bank.save(tmp_path / "b")
    meta = json.loads((tmp_path / "b.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "b.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version"):
        BaseBank.load(tmp_path / "b")


def test_bank_rejects_an_incompatible_extractor(dino_random, colour_extractor, make_base_object):
    bank = BaseBank.build([make_base_object(32, 32)], dino_random, image_size=32)
    bank.check_compatible(dino_random, 32)
    with pytest.raises(ValueError, match="rebuild the bank"):
        bank.check_compatible(colour_extractor, 32)
    with pytest.raises(ValueError, match="at 32 px"):
        bank.check_compatible(dino_random, 64)


def test_base_object_validation():
    image = np.zeros((8, 8, 3), np.uint8)
    mask = np.ones((8, 8), bool)
    with pytest.raises(ValueError, match="object_mask"):
        BaseObject(image, np.ones((8, 9), bool), mask[None], ["cat:head"], "cat")
    with pytest.raises(ValueError, match="at least one part"):
        BaseObject(image, mask, np.zeros((0, 8, 8), bool), [], "cat")
    with pytest.raises(ValueError, match="'object:part'"):
        BaseObject(image, mask, mask[None], ["head"], "cat")
    with pytest.raises(ValueError, match="no objects"):
        BaseBank.build([], None, image_size=32)
