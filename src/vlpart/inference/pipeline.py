"""One pass of a :class:`~vlpart.inference.segmenter.PartSegmenter` over image files, pipelined:
``vlpart predict`` on a folder (:mod:`vlpart.inference.files`) and ``vlpart label``
(:mod:`vlpart.inference.label_shard`) both run it.

Three stages overlap:

1. decoding: ``num_workers`` DataLoader processes (one torch thread each; 0: in the calling
   thread, between model calls) read the next images; huge JPEGs are decoded at a reduced scale
   whose short side stays at least the model's input size (not with a refiner, which needs every
   pixel; see :func:`vlpart.core.fileio.read_image`);
2. the model: the calling thread, ``batch_size`` images per :meth:`PartSegmenter.predict` call;
3. finishing: ``writers`` threads run each image's finishing work (RLE encoding, drawing,
   writing files; 0: in the calling thread right after the model, one image after another).

Every queue is bounded (at most two decoded batches per decoding process and ``2 * writers``
images waiting to be finished), so memory does not grow with the number of files. What comes
out is in input order and the same whatever ``writers`` is: each image's finishing work sees
only that image and its prediction.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch

from vlpart.core.distributed import one_torch_thread
from vlpart.core.fileio import read_image, read_image_size
from vlpart.core.vocab import Vocabulary
from vlpart.inference.prediction import Prediction
from vlpart.inference.segmenter import PartSegmenter

__all__ = ["Decoded", "Finished", "predict_pipelined"]

T = TypeVar("T")
# Images waiting for a writer thread, per writer: enough to keep it busy, little memory.
PENDING_PER_WRITER = 2


@dataclass(frozen=True)
class Decoded:
    """One readable input.

    Attributes:
        index: its position in the input list.
        number: 1-based count of the readable inputs up to this one (an image id).
        path: the file.
        array (np.ndarray[h, w, 3], uint8): RGB pixels, possibly a reduced decode.
        size: ``(H, W)`` of the full image (the predictions' frame).
    """

    index: int
    number: int
    path: Path
    array: np.ndarray
    size: tuple[int, int]


@dataclass(frozen=True)
class Finished(Generic[T]):
    """What became of one input: ``value`` (what its finishing work returned) or ``error``
    (why it could not be read: the reader's message, naming the file)."""

    index: int
    path: Path
    value: T | None = None
    error: str | None = None


class _ImageFiles(torch.utils.data.Dataset):
    """Decoded images for the DataLoader: ``(index, np.ndarray[h, w, 3] uint8 | None, full
    (H, W) | None, error | None)``."""

    def __init__(self, paths: Sequence[Path], min_side: int | None) -> None:
        self.paths = list(paths)
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        path = self.paths[index]
        try:
            size = read_image_size(path)
            return index, read_image(path, min_side=self.min_side), size, None
        except (ValueError, OSError) as err:
            return index, None, None, str(err)


def predict_pipelined(
    segmenter: PartSegmenter,
    paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    start: Callable[[Decoded], Callable[[Prediction], T]],
    score_threshold: float | None = None,
    batch_size: int = 1,
    num_workers: int = 1,
    writers: int = 1,
    seconds: dict[str, float] | None = None,
) -> Iterator[Finished[T]]:
    """Segment ``paths`` and finish each image, in the stages of the module docstring.

    Args:
        segmenter: runs the model (:meth:`PartSegmenter.predict`, ``score_threshold`` as there).
        paths: the image files.
        vocabulary: what to segment.
        start: called in the calling thread for each readable image, in input order, before
            its prediction (cheap bookkeeping that depends on the order: ids, unique names);
            returns the image's finishing work, which a writer thread calls with the
            prediction.
        batch_size: images per model call.
        num_workers: decoding processes.
        writers: finishing threads (0: finish in the calling thread).
        seconds: if given, the calling thread's seconds waiting for decoded images are added
            to its ``"decode"`` entry and those in the model to its ``"model"`` entry.

    Yields:
        One :class:`Finished` per input, in input order. An exception of the finishing work is
        raised here, at its image.
    """
    transform = segmenter.backend.transform
    min_side = transform.min_size if segmenter.refiner is None else None
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, min_side),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        worker_init_fn=one_torch_thread,
    )
    pool = ThreadPoolExecutor(writers, thread_name_prefix="vlpart-writer") if writers else None
    waiting: deque[Finished | tuple[int, Path, Future]] = deque()
    number = 0
    seconds = {} if seconds is None else seconds
    try:
        batches = iter(loader)
        while True:
            waited = time.perf_counter()
            items = next(batches, None)
            seconds["decode"] = seconds.get("decode", 0.0) + time.perf_counter() - waited
            if items is None:
                break
            batch = []
            for index, array, size, error in items:
                if error is not None:
                    waiting.append(Finished(index, paths[index], error=error))
                    continue
                number += 1
                image = Decoded(index, number, paths[index], array, size)
                batch.append((image, start(image)))
            if batch:
                started = time.perf_counter()
                preds = segmenter.predict(
                    [image.array for image, _ in batch],
                    vocabulary=vocabulary,
                    score_threshold=score_threshold,
                    image_sizes=[image.size for image, _ in batch],
                )
                seconds["model"] = seconds.get("model", 0.0) + time.perf_counter() - started
                for (image, finish), pred in zip(batch, preds, strict=True):
                    if pool is None:
                        waiting.append(Finished(image.index, image.path, value=finish(pred)))
                    else:
                        waiting.append((image.index, image.path, pool.submit(finish, pred)))
            while waiting and (
                isinstance(waiting[0], Finished) or len(waiting) > PENDING_PER_WRITER * writers
            ):
                yield _result(waiting.popleft())
        while waiting:
            yield _result(waiting.popleft())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _result(entry: Finished | tuple[int, Path, Future]) -> Finished:
    """``entry`` as a :class:`Finished`, waiting for its writer if need be."""
    if isinstance(entry, Finished):
        return entry
    index, path, future = entry
    return Finished(index, path, value=future.result())
