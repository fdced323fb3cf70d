"""The base bank: features and part masks of base-object images that novel objects are parsed from.

On disk a bank is two files written atomically: ``NAME.safetensors`` (tensors) and ``NAME.json``
(format version, feature geometry, extractor identity and per-image category, part names and
source).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import atomic_write, write_text_atomic
from vlpart.parsing.features import FeatureExtractor, prepare_images, prepare_masks
from vlpart.parsing.transfer import foreground_cells

__all__ = ["BANK_FORMAT_VERSION", "BaseBank", "BaseObject", "BankEntry", "bank_paths"]

BANK_FORMAT_VERSION = 1


@dataclass(frozen=True)
class BaseObject:
    """One base object instance, usually a crop around it.

    Attributes:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB.
        object_mask: ``np.ndarray[H, W]`` bool, the object's pixels.
        part_masks: ``np.ndarray[P, H, W]`` bool, one mask per part (P >= 1; may overlap).
        part_names: P category names ``object:part`` (``cat:torso``).
        category: the object's name (``cat``).
        source: free text saying where it came from (file, instance index).
    """

    image: np.ndarray
    object_mask: np.ndarray
    part_masks: np.ndarray
    part_names: Sequence[str]
    category: str
    source: str = ""

    def __post_init__(self) -> None:
        height, width = self.image.shape[:2]
        where = f"base object {self.source or self.category!r}"
        if self.object_mask.shape != (height, width):
            raise InputError(
                f"{where}: object_mask {self.object_mask.shape} does not match the image "
                f"({height}x{width})"
            )
        if self.part_masks.ndim != 3 or self.part_masks.shape[1:] != (height, width):
            raise InputError(
                f"{where}: part_masks must be [P, {height}, {width}], got {self.part_masks.shape}"
            )
        if len(self.part_names) != self.part_masks.shape[0] or not self.part_names:
            raise InputError(
                f"{where}: needs at least one part and one name per part mask "
                f"({len(self.part_names)} names, {self.part_masks.shape[0]} masks)"
            )
        bad = [n for n in self.part_names if ":" not in n]
        if bad:
            raise InputError(f"{where}: part names must be 'object:part', got {bad}")


@dataclass(frozen=True)
class BankEntry:
    """Metadata of one bank image."""

    category: str
    part_names: tuple[str, ...]
    source: str = ""


@dataclass
class BaseBank:
    """Features and part masks of N base images resized to S×S.

    Attributes:
        cls (Tensor[N, D], float32): L2-normalised global descriptors.
        dense (Tensor[N, h, w, D'], float32): L2-normalised dense features.
        foreground (Tensor[N, h, w], bool): cells touching each object.
        masks (Tensor[sum P, S, S], bool): part masks of all images, image after image.
        entries: N records of category, part names and source.
        extractor: identity of the feature extractor that made the features.
        image_size: S.
        stride, patch_size: cell geometry of the features.
    """

    cls: Tensor
    dense: Tensor
    foreground: Tensor
    masks: Tensor
    entries: list[BankEntry]
    extractor: str
    image_size: int
    stride: int
    patch_size: int
    _offsets: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        counts = [len(e.part_names) for e in self.entries]
        self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
        n = len(self.entries)
        if not (self.cls.shape[0] == self.dense.shape[0] == self.foreground.shape[0] == n):
            raise InputError(f"bank tensors disagree with its {n} entries")
        if self.masks.shape[0] != self._offsets[-1]:
            raise InputError(f"bank has {self.masks.shape[0]} masks for {self._offsets[-1]} parts")

    def __len__(self) -> int:
        return len(self.entries)

    def part_masks(self, index: int) -> Tensor:
        """Tensor[P, S, S] bool: the part masks of image ``index``."""
        return self.masks[self._offsets[index] : self._offsets[index + 1]]

    @classmethod
    def build(
        cls,
        objects: Iterable[BaseObject],
        extractor: FeatureExtractor,
        *,
        image_size: int = 224,
        batch_size: int = 8,
    ) -> BaseBank:
        """Extract features of base objects (batched) into a bank.

        Raises:
            ValueError: no objects, or an object mask that covers no pixel.
        """
        cls_rows, dense_rows, fg_rows, mask_rows, entries = [], [], [], [], []
        batch: list[BaseObject] = []

        def flush() -> None:
            images = prepare_images([o.image for o in batch], image_size, extractor)
            images = images.to(extractor.device)
            with torch.inference_mode():
                feats = extractor(images)
            cls_rows.append(F.normalize(feats.cls.float(), dim=-1).cpu())
            dense_rows.append(F.normalize(feats.dense.float(), dim=-1).cpu())
            for obj in batch:
                object_mask = prepare_masks(obj.object_mask, image_size)
                if not object_mask.any():
                    raise InputError(
                        f"base object {obj.source or obj.category!r}: the object mask is empty "
                        f"at {image_size}x{image_size}"
                    )
                fg_rows.append(
                    foreground_cells(object_mask, stride=feats.stride, patch_size=feats.patch_size)
                )
                mask_rows.append(prepare_masks(obj.part_masks, image_size))
                entries.append(BankEntry(obj.category, tuple(obj.part_names), obj.source))
            batch.clear()

        for obj in objects:
            batch.append(obj)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if not entries:
            raise InputError("cannot build a base bank from no objects")
        return cls(
            cls=torch.cat(cls_rows),
            dense=torch.cat(dense_rows),
            foreground=torch.stack(fg_rows),
            masks=torch.cat(mask_rows),
            entries=entries,
            extractor=extractor.identity,
            image_size=image_size,
            stride=extractor.stride,
            patch_size=extractor.patch_size,
        )

    def check_compatible(self, extractor: FeatureExtractor, image_size: int) -> None:
        """Raise ValueError unless ``extractor`` at ``image_size`` makes the bank's features."""
        if extractor.identity != self.extractor or image_size != self.image_size:
            raise InputError(
                f"the base bank was built with {self.extractor!r} at {self.image_size} px, but "
                f"parsing uses {extractor.identity!r} at {image_size} px; rebuild the bank or "
                "use the same backend, weights, stride and image size"
            )

    def save(self, path: str | Path) -> None:
        """Write ``PATH.safetensors`` and ``PATH.json`` (suffix of ``path`` ignored), atomically."""
        tensor_path, meta_path = bank_paths(path)
        tensor_path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "cls": self.cls.contiguous(),
            "dense": self.dense.contiguous(),
            "foreground": self.foreground.contiguous(),
            "masks": self.masks.contiguous(),
        }
        meta = {
            "format_version": BANK_FORMAT_VERSION,
            "extractor": self.extractor,
            "image_size": self.image_size,
            "stride": self.stride,
            "patch_size": self.patch_size,
            "entries": [
                {"category": e.category, "part_names": list(e.part_names), "source": e.source}
                for e in self.entries
            ],
        }
        atomic_write(tensor_path, lambda tmp: save_file(tensors, str(tmp)))
        write_text_atomic(meta_path, json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> BaseBank:
        """Read a bank written by :meth:`save`.

        Raises:
            FileNotFoundError: either file is missing.
            ValueError: unknown format version or inconsistent contents.
        """
        tensor_path, meta_path = bank_paths(path)
        for p in (tensor_path, meta_path):
            if not p.is_file():
                raise MissingFileError(f"{p}: base bank file not found")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != BANK_FORMAT_VERSION:
            raise InputError(
                f"{meta_path}: bank format version {meta.get('format_version')!r} is not "
                f"{BANK_FORMAT_VERSION}; rebuild the bank"
            )
        tensors = load_file(str(tensor_path))
        return cls(
            cls=tensors["cls"],
            dense=tensors["dense"],
            foreground=tensors["foreground"],
            masks=tensors["masks"],
            entries=[
                BankEntry(e["category"], tuple(e["part_names"]), e.get("source", ""))
                for e in meta["entries"]
            ],
            extractor=meta["extractor"],
            image_size=meta["image_size"],
            stride=meta["stride"],
            patch_size=meta["patch_size"],
        )


def bank_paths(path: str | Path) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for a bank path given with or without a suffix."""
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")
