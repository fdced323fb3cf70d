"""COCO/LVIS/image-level datasets: shapes, dtypes, labels, empty images, errors, batching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlpart.core.coco import encode_mask
from vlpart.data import (
    DataKind,
    DetectionDataset,
    ImageLabelDataset,
    LvisDataset,
    MultiDataset,
    MultiDatasetBatchSampler,
    RandomHorizontalFlip,
    SampleKey,
    collate,
)

H, W = 48, 64


def _write_world(root, *, extra_image: dict | None = None):
    """Three images: two annotated (a polygon part and an RLE part), one without annotations."""
    for name, value in (("a.png", 40), ("b.png", 120), ("empty.png", 200)):
        Image.fromarray(np.full((H, W, 3), value, dtype=np.uint8)).save(root / name)
    rle_mask = np.zeros((H, W), dtype=np.uint8)
    rle_mask[20:30, 5:15] = 1
    images = [
        {
            "id": 1,
            "file_name": "a.png",
            "height": H,
            "width": W,
            "neg_category_ids": [3],
            "not_exhaustive_category_ids": [],
            "pos_category_ids": [7, 3],
        },
        {
            "id": 2,
            "file_name": "b.png",
            "height": H,
            "width": W,
            "neg_category_ids": [],
            "not_exhaustive_category_ids": [7],
            "pos_category_ids": [3],
        },
        {"id": 3, "file_name": "empty.png", "height": H, "width": W, "pos_category_ids": []},
    ]
    if extra_image:
        images.append(extra_image)
    data = {
        "images": images,
        # ids deliberately not 1..C and out of order: labels follow increasing id
        "categories": [{"id": 7, "name": "dog:head"}, {"id": 3, "name": "cat:leg"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [10, 8, 20, 10],
                "segmentation": [[10, 8, 30, 8, 30, 18, 10, 18]],
                "area": 200,
                "iscrowd": 0,
                "object_id": 11,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 3,
                "bbox": [5, 20, 10, 10],
                "segmentation": encode_mask(rle_mask),
                "area": 100,
                "iscrowd": 0,
                "object_id": 12,
            },
            {
                "id": 3,
                "image_id": 1,
                "category_id": 3,
                "bbox": [0, 0, 5, 5],
                "segmentation": [[0, 0, 5, 0, 5, 5]],
                "area": 12,
                "iscrowd": 1,
            },
            {
                "id": 4,
                "image_id": 2,
                "category_id": 3,
                "bbox": [40, 30, 8, 6],
                "segmentation": [[40, 30, 48, 30, 48, 36, 40, 36]],
                "area": 48,
                "iscrowd": 0,
            },
        ],
    }
    path = root / "anns.json"
    path.write_text(json.dumps(data))
    return path


def test_part_dataset_shapes_dtypes_and_labels(tmp_path):
    ds = DetectionDataset(_write_world(tmp_path), tmp_path, kind=DataKind.PART)
    assert ds.kind is DataKind.PART and ds.kind == "part" and len(ds) == 3
    assert ds.vocabulary.names == ["cat:leg", "dog:head"]
    assert ds.vocabulary[1].object == "dog" and ds.vocabulary[1].part == "head"
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.uint8 and int(image[0, 0, 0]) == 40
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[10.0, 8.0, 30.0, 18.0], [5.0, 20.0, 15.0, 30.0]])
    )
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1, 0]
    masks = target["masks"]
    assert masks.shape == (2, H, W) and masks.dtype == torch.uint8
    assert int(masks[1].sum()) == 100 and int(masks[1, 25, 10]) == 1 and int(masks[1, 5, 5]) == 0
    assert int(masks[0, 12, 20]) == 1 and int(masks[0, 30, 50]) == 0
    assert target["image_id"] == 1
    assert set(target) == {"boxes", "labels", "masks", "image_id"}
    assert ds.image_category_ids() == [[0, 1], [0], []]


def test_image_without_annotations_gives_empty_tensors(tmp_path):
    ds = DetectionDataset(_write_world(tmp_path), tmp_path, kind="object")
    _, target = ds[2]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["masks"].shape == (0, H, W) and target["masks"].dtype == torch.uint8
    flipped = DetectionDataset(
        _write_world(tmp_path), tmp_path, kind="object", transform=RandomHorizontalFlip(1.0)
    )
    _, target = flipped[2]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, H, W)


def test_parsed_dataset_has_boxes_but_no_masks(tmp_path):
    ds = DetectionDataset(_write_world(tmp_path), tmp_path, kind=DataKind.PARSED)
    _, target = ds[0]
    assert "masks" not in target and target["boxes"].shape == (2, 4)
    with pytest.raises(ValueError, match="ImageLabelDataset"):
        DetectionDataset(_write_world(tmp_path), tmp_path, kind=DataKind.IMAGE)


def test_lvis_dataset_federated_fields(tmp_path):
    ds = LvisDataset(_write_world(tmp_path), tmp_path)
    assert ds.kind is DataKind.OBJECT
    _, first = ds[0]
    _, second = ds[1]
    assert set(first) == set(second) == {"boxes", "labels", "masks", "image_id"}
    # no image_count in the file: counted from annotations (cat:leg in 2 images, dog:head in 1)
    assert ds.category_image_counts.tolist() == [2.0, 1.0]
    path = tmp_path / "anns.json"
    data = json.loads(path.read_text())
    data["categories"][0]["image_count"] = 40
    data["categories"][1]["image_count"] = 9
    path.write_text(json.dumps(data))
    assert LvisDataset(path, tmp_path).category_image_counts.tolist() == [9.0, 40.0]


def test_image_label_dataset(tmp_path):
    ds = ImageLabelDataset(_write_world(tmp_path), tmp_path)
    assert ds.kind is DataKind.IMAGE
    _, target = ds[0]
    assert target["image_labels"].tolist() == [0, 1]
    assert target["image_labels"].dtype == torch.int64
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    _, empty = ds[2]
    assert empty["image_labels"].shape == (0,)
    assert ds.image_category_ids() == [[0, 1], [0], []]


def test_bad_files_raise_naming_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        DetectionDataset(tmp_path / "missing.json", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        DetectionDataset(tmp_path / "bad.json", tmp_path)
    path = _write_world(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"anns.json: annotations\[0\].category_id: 99 is not"):
        DetectionDataset(path, tmp_path)
    extra = {"id": 9, "file_name": "gone.png", "height": H, "width": W}
    ds = DetectionDataset(_write_world(tmp_path, extra_image=extra), tmp_path)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        ds[3]
    wrong = {"id": 9, "file_name": "a.png", "height": H + 1, "width": W}
    ds = DetectionDataset(_write_world(tmp_path, extra_image=wrong), tmp_path)
    with pytest.raises(ValueError, match="a.png: image is 64x48"):
        ds[3]


def test_transforms_seeded_per_sample(tmp_path):
    ds = DetectionDataset(_write_world(tmp_path), tmp_path, transform=RandomHorizontalFlip(0.5))
    seeds = range(40)
    first = [ds.get(0, seed=s)[1]["boxes"][0, 0].item() for s in seeds]
    second = [ds.get(0, seed=s)[1]["boxes"][0, 0].item() for s in seeds]
    assert first == second and set(first) == {10.0, 34.0}  # 34 = 64 - 30
    assert torch.equal(ds[0][1]["boxes"], ds[0][1]["boxes"])


def test_multi_dataset_loader_batches(tmp_path):
    parts = DetectionDataset(_write_world(tmp_path), tmp_path, kind=DataKind.PART)
    labels = ImageLabelDataset(tmp_path / "anns.json", tmp_path)
    multi = MultiDataset([parts, labels])
    image, target = multi[SampleKey(1, 0, 5)]
    assert target["dataset"] == 1 and "image_labels" in target
    sampler = MultiDatasetBatchSampler(
        [np.ones(len(parts)), np.ones(len(labels))], batch_sizes=[2, 3], num_batches=6, seed=1
    )
    loader = DataLoader(multi, batch_sampler=sampler, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 6
    for images, targets in batches:
        sources = {t["dataset"] for t in targets}
        assert len(sources) == 1
        assert len(images) == (2 if sources == {0} else 3)
        assert all(im.shape == (3, H, W) for im in images)
    assert collate([]) == ([], [])


def test_vocabulary_from_categories_reads_parts_and_fields():
    from vlpart.core.coco import category_vocabulary

    vocab = category_vocabulary(
        [
            {"id": 2, "name": "Quadruped Head", "supercategory": "Quadruped"},
            {"id": 0, "name": "dog:head", "split": "novel"},
            {"id": 1, "name": "trash_can", "image_count": 12, "supercategory": "object"},
        ],
        name="mixed",
    )
    assert vocab.names == ["dog:head", "trash_can", "Quadruped Head"]
    assert (vocab[0].object, vocab[0].part, vocab[0].split) == ("dog", "head", "novel")
    assert (vocab[1].part, vocab[1].image_count) == (None, 12)
    assert (vocab[2].object, vocab[2].part, vocab[2].id) == ("Quadruped", "Head", 2)
    assert vocab[2].prompt() == "a quadruped head"


def test_split_keeps_only_that_splits_categories(synthetic_world):
    from vlpart.data import DetectionDataset, ImageLabelDataset

    full = DetectionDataset(synthetic_world / "parts_val.json", synthetic_world)
    base = DetectionDataset(synthetic_world / "parts_val.json", synthetic_world, split="base")
    novel = DetectionDataset(synthetic_world / "parts_val.json", synthetic_world, split="novel")
    assert len(base.vocabulary) + len(novel.vocabulary) == len(full.vocabulary)
    assert set(novel.vocabulary.objects) == {"dog", "bus"}
    assert "dog" not in base.vocabulary.objects
    num_full = sum(len(full[i][1]["labels"]) for i in range(len(full)))
    num_split = sum(len(d[i][1]["labels"]) for d in (base, novel) for i in range(len(d)))
    assert num_split == num_full > 0
    for i in range(len(novel)):
        labels = novel[i][1]["labels"]
        assert all(novel.vocabulary[int(j)].object in {"dog", "bus"} for j in labels)
    labels = ImageLabelDataset(
        synthetic_world / "image_labels_train.json", synthetic_world, split="base"
    )
    assert "dog" not in labels.vocabulary.names
    assert all(
        labels.vocabulary[int(j)].object != "dog"
        for i in range(len(labels))
        for j in labels[i][1]["image_labels"]
    )
    with pytest.raises(ValueError, match="no category has split 'nove'"):
        DetectionDataset(synthetic_world / "parts_val.json", synthetic_world, split="nove")
