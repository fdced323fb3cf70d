"""Torch datasets over COCO-format JSON files, one per kind of training data.

Every dataset yields ``(image, target)``: ``image`` is Tensor[3, H, W] uint8 RGB and ``target`` a
dict with

* ``boxes`` (Tensor[N, 4], float32): XYXY, absolute pixels of the (transformed) image;
* ``labels`` (Tensor[N], int64): 0-based rows of the dataset's :attr:`vocabulary`;
* ``masks`` (Tensor[N, H, W], uint8): part and object datasets only;
* ``image_labels`` (Tensor[K], int64): image-level datasets only (``boxes``/``labels`` empty);
* ``image_id`` (int).

Files are read and validated by :func:`vlpart.core.coco.load_coco` and images by
:func:`vlpart.core.fileio.read_image` (EXIF orientation applied). The vocabulary comes from the
file's ``categories`` in increasing id order (:func:`vlpart.core.coco.category_vocabulary`: a
``dog:head`` name is a part of ``dog``). Crowd annotations and boxes of zero width or height are
left out. Random transforms draw from a generator seeded by the sample's seed: ``dataset[i]`` uses
seed ``i``; samplers pass their own through :class:`MultiDataset` and :class:`SampleKey`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vlpart.core.coco import category_vocabulary, decode_segmentation, load_coco
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import read_image
from vlpart.core.kinds import DataKind
from vlpart.core.vocab import Vocabulary
from vlpart.data.transforms import Transform

__all__ = [
    "DetectionDataset",
    "ImageLabelDataset",
    "LvisDataset",
    "MultiDataset",
    "SampleKey",
    "collate",
]


class _CocoImages(Dataset):
    """Images and vocabulary of a COCO-format file; subclasses build the targets.

    With ``split`` (``"base"`` or ``"novel"``) only the categories whose ``split`` field says so
    are kept, and annotations and labels of the others are left out (the paper's base-parts
    training on a file that holds all parts).
    """

    kind: DataKind

    def __init__(
        self,
        ann_file: str | Path,
        image_root: str | Path,
        *,
        transform: Transform | None = None,
        split: str | None = None,
        masks: bool = False,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_root = Path(image_root)
        self.transform = transform
        data = load_coco(self.ann_file, annotations=self.kind is not DataKind.IMAGE, masks=masks)
        self.images: list[dict] = data["images"]
        categories = data["categories"]
        if split is not None:
            categories = [c for c in categories if c.get("split") == split]
            if not categories:
                raise InputError(f"{self.ann_file}: no category has split {split!r}")
        kept = {int(c["id"]) for c in categories}
        self._excluded_ids = {int(c["id"]) for c in data["categories"]} - kept
        self.vocabulary: Vocabulary = category_vocabulary(
            categories, name=self.ann_file.stem + (f"[{split}]" if split else "")
        )
        self._label_of_id = {c.id: i for i, c in enumerate(self.vocabulary)}
        self._data = data

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        return self.get(index, seed=index)

    def get(self, index: int, *, seed: int) -> tuple[Tensor, dict]:
        """Sample ``index`` with random transforms drawn from a generator seeded by ``seed``."""
        info = self.images[index]
        image = self._read_image(info)
        target = self._target(index, info)
        target["image_id"] = int(info["id"])
        if self.transform is not None:
            image, target = self.transform(image, target, torch.Generator().manual_seed(seed))
        return image, target

    def image_category_ids(self) -> list[list[int]]:
        """Per image, the distinct labels (vocabulary rows) it contains; for repeat factors."""
        raise NotImplementedError

    def _target(self, index: int, info: dict) -> dict:
        raise NotImplementedError

    def _kept(self, category_ids: Sequence[int]) -> list[int]:
        """``category_ids`` without those of categories outside the chosen split."""
        return [c for c in category_ids if int(c) not in self._excluded_ids]

    def _labels_of(self, category_ids: Sequence[int], what: str) -> list[int]:
        try:
            return [self._label_of_id[int(c)] for c in category_ids]
        except KeyError as err:
            raise InputError(
                f"{self.ann_file}: {what} uses category id {err.args[0]}, which is not in "
                f"'categories'"
            ) from None

    def _image_path(self, info: dict) -> Path:
        name = info.get("file_name")
        if name is None and "coco_url" in info:  # LVIS v1: .../train2017/000000391895.jpg
            name = "/".join(info["coco_url"].split("/")[-2:])
        if name is None:
            raise InputError(f"{self.ann_file}: image {info.get('id')} has no file_name")
        return self.image_root / name

    def _read_image(self, info: dict) -> Tensor:
        """``Tensor[3, H, W]`` uint8 of an image entry, checked against its ``height``/``width``."""
        path = self._image_path(info)
        if not path.is_file():
            raise MissingFileError(f"{path}: image of {self.ann_file.name} not found")
        pixels = read_image(path)
        size = (int(info["height"]), int(info["width"]))
        if pixels.shape[:2] != size:
            raise InputError(
                f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} (after EXIF orientation) "
                f"but {self.ann_file.name} says {size[1]}x{size[0]}"
            )
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.ann_file)!r}, kind={self.kind.value}, "
            f"images={len(self)}, categories={len(self.vocabulary)})"
        )


class DetectionDataset(_CocoImages):
    """Boxes and masks of parts or objects, or pseudo part boxes, from a COCO-format file.

    Args:
        ann_file: COCO-format JSON (polygon or RLE ``segmentation``; ignored for ``PARSED``).
        image_root: folder that ``file_name`` is relative to.
        kind: ``PART``, ``OBJECT`` or ``PARSED`` (no masks are decoded).
        transform: applied to ``(image, target)`` with a per-sample generator.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_root: str | Path,
        *,
        kind: DataKind = DataKind.PART,
        transform: Transform | None = None,
        split: str | None = None,
    ) -> None:
        kind = DataKind(kind)
        if kind is DataKind.IMAGE:
            raise InputError("image-level data has no boxes; use ImageLabelDataset")
        self.kind = kind
        super().__init__(
            ann_file,
            image_root,
            transform=transform,
            split=split,
            masks=kind is not DataKind.PARSED,
        )
        self._anns: dict[int, list[dict]] = {int(info["id"]): [] for info in self.images}
        for ann in self._data["annotations"]:
            if ann.get("iscrowd", 0) or ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0:
                continue
            if int(ann["category_id"]) in self._excluded_ids:
                continue
            self._labels_of([ann["category_id"]], f"annotation {ann.get('id')}")
            self._anns.setdefault(int(ann["image_id"]), []).append(ann)

    def image_category_ids(self) -> list[list[int]]:
        return [
            sorted({self._label_of_id[a["category_id"]] for a in self._anns[int(info["id"])]})
            for info in self.images
        ]

    def _target(self, index: int, info: dict) -> dict:
        anns = self._anns[int(info["id"])]
        height, width = int(info["height"]), int(info["width"])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        target = {
            "boxes": boxes,
            "labels": torch.tensor(
                self._labels_of([a["category_id"] for a in anns], "an annotation"),
                dtype=torch.int64,
            ),
        }
        if self.kind is not DataKind.PARSED:
            masks = np.zeros((len(anns), height, width), dtype=np.uint8)
            for i, ann in enumerate(anns):
                masks[i] = decode_segmentation(ann["segmentation"], height, width)
            target["masks"] = torch.from_numpy(masks)
        return target


class LvisDataset(DetectionDataset):
    """An LVIS-format file (LVIS, PACO): boxes and masks plus :attr:`category_image_counts` for
    the federated loss (the images' ``neg_category_ids`` / ``not_exhaustive_category_ids`` matter
    to LVIS-style evaluation only, which reads them from the file)."""

    def __init__(
        self,
        ann_file: str | Path,
        image_root: str | Path,
        *,
        kind: DataKind = DataKind.OBJECT,
        transform: Transform | None = None,
        split: str | None = None,
    ) -> None:
        super().__init__(ann_file, image_root, kind=kind, transform=transform, split=split)
        counts = [c.image_count for c in self.vocabulary]
        if any(c is None for c in counts):
            counted = np.zeros(len(self.vocabulary), dtype=np.int64)
            for labels in self.image_category_ids():
                counted[labels] += 1
            counts = counted.tolist()
        # Tensor[C], float32: images containing each category (the file's ``image_count``
        # fields when every category has one, else counted from the annotations).
        self.category_image_counts = torch.tensor(counts, dtype=torch.float32)


class ImageLabelDataset(_CocoImages):
    """Images with image-level labels only (ImageNet-style): ``images[i]["pos_category_ids"]``.

    Targets have ``image_labels`` (Tensor[K], int64: vocabulary rows) and empty ``boxes``
    (Tensor[0, 4]) and ``labels`` (Tensor[0]).
    """

    kind = DataKind.IMAGE

    def image_category_ids(self) -> list[list[int]]:
        return [
            sorted(
                set(
                    self._labels_of(
                        self._kept(info.get("pos_category_ids", [])), f"image {info['id']}"
                    )
                )
            )
            for info in self.images
        ]

    def _target(self, index: int, info: dict) -> dict:
        labels = self._labels_of(
            self._kept(info.get("pos_category_ids", [])), f"image {info['id']}"
        )
        return {
            "boxes": torch.zeros((0, 4), dtype=torch.float32),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "image_labels": torch.tensor(sorted(set(labels)), dtype=torch.int64),
        }


class SampleKey(NamedTuple):
    """Which sample a batch sampler asks :class:`MultiDataset` for, and its transform seed."""

    dataset: int
    index: int
    seed: int


class MultiDataset(Dataset):
    """Several datasets behind one ``__getitem__(SampleKey)``, for a multi-dataset sampler.

    Each target gains ``dataset`` (int), the position of its source in ``datasets``; look up
    ``datasets[target["dataset"]].kind`` and ``.vocabulary`` there.
    """

    def __init__(self, datasets: Sequence[_CocoImages]) -> None:
        if not datasets:
            raise InputError("MultiDataset needs at least one dataset")
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: SampleKey) -> tuple[Tensor, dict]:
        image, target = self.datasets[key.dataset].get(key.index, seed=key.seed)
        target["dataset"] = key.dataset
        return image, target


def collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """Keep images (of different sizes) and targets as lists; the model pads and batches."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
