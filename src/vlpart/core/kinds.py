"""The four kinds of training data; the data sources produce them, the detector picks its
losses by them (``vlpart.model.losses.LOSS_WEIGHTS``)."""

from __future__ import annotations

from enum import Enum

__all__ = ["DataKind"]


class DataKind(str, Enum):
    """What a dataset's targets hold; the trainer picks its losses by kind.

    * ``PART``: boxes and masks of object parts (``dog:head``);
    * ``OBJECT``: boxes and masks of whole objects (``dog``);
    * ``IMAGE``: image-level labels only (``image_labels``), no boxes;
    * ``PARSED``: pseudo part boxes from parsing novel objects, no masks.
    """

    PART = "part"
    OBJECT = "object"
    IMAGE = "image"
    PARSED = "parsed"
