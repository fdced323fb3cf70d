"""``vlpart track``: a video segmented by :meth:`~vlpart.PartSegmenter.predict`, tracked with
:class:`~vlpart.inference.tracking.associate.FrameTracker` and written out.

Outputs for ``clip.mp4`` in ``out_dir``:

* ``clip.mp4``: every decoded frame with its tracked instances, one colour per track, tagged
  ``label #track_id score``;
* ``clip.json``: a COCO file with ``info.video`` (as ``vlpart predict``'s, see
  :mod:`vlpart.inference.video`) and ``info.tracking`` (``tracker``, ``every``,
  ``num_tracks``); ``images``: every decoded frame (``frame_index``, ``time``, and
  ``source``: ``detector``, ``interpolated``, ``sam2`` or ``held``); ``annotations``: COCO
  results with ``label``, ``parent`` (index among the frame's instances), ``track_id`` and
  ``parent_track_id`` (-1: none). Segmented frames list every detection (untracked ones with
  ``track_id`` -1), the others only tracked instances;
* ``clip_mot/<category>.txt``: per category (``:`` and other characters unsafe in file names
  become ``_``) the MOTChallenge rows ``frame,id,x,y,w,h,score,-1,-1,-1`` of its tracked
  instances, frames counted from 1.

The video is written atomically first; the COCO file and the MOT folder then appear together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vlpart.core.coco import category_records, mot_challenge_rows, with_track_ids, write_coco
from vlpart.core.errors import InputError
from vlpart.core.fileio import OutputSet
from vlpart.core.vocab import Vocabulary
from vlpart.inference.segmenter import PartSegmenter
from vlpart.inference.tracking.associate import (
    NO_TRACK,
    FrameTracker,
    MaskPropagator,
    PartTracker,
    TrackedFrame,
    tracked_overlay,
)
from vlpart.inference.video import (
    VideoFormat,
    VideoSummary,
    frame_image,
    process_video,
    video_info,
    video_stem,
)

__all__ = ["TRACKERS", "track_video"]

TRACKERS = ("bytetrack", "sam2")


def track_video(
    segmenter: PartSegmenter,
    source: str | Path,
    *,
    vocabulary: Vocabulary,
    out_dir: str | Path,
    score_threshold: float | None = None,
    every: int = 1,
    propagator: MaskPropagator | None = None,
    progress: bool = True,
) -> VideoSummary:
    """Segment every ``every``-th frame of ``source``, track objects and parts through all
    frames and write the outputs of the module docstring.

    Args:
        segmenter: the model and its text encoder.
        source: a video file.
        vocabulary: what to segment and track.
        score_threshold: keep detections scoring at least this (None: the segmenter's).
        every: segment frames 0, N, 2N, ...; the frames between are filled (see
            :mod:`vlpart.inference.tracking.associate`).
        propagator: carries masks to the frames between (SAM 2); None interpolates boxes and
            warps the last masks.
        progress: show a progress bar.

    Returns:
        The summary; ``error`` says why decoding stopped early (the outputs keep the frames
        decoded before).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``every`` < 1, a file that is not a readable video or has no frames.
    """
    if every < 1:
        raise InputError(f"every must be at least 1, got {every}")
    segmenter.text_embeddings(vocabulary)  # encode once up front
    runs: list[_TrackRun] = []

    def predict(array: np.ndarray):
        return segmenter.predict(array, vocabulary=vocabulary, score_threshold=score_threshold)

    def make(fmt: VideoFormat) -> _TrackRun:
        tracker = PartTracker(frame_rate=float(fmt.rate))
        frames = FrameTracker(predict, tracker, every=every, propagator=propagator)
        runs.append(_TrackRun(frames, fmt))
        return runs[0]

    summary, fmt = process_video(source, make, out_dir=out_dir, progress=progress)
    run = runs[0]
    summary.frames_processed = sum(im["source"] == "detector" for im in run.images)
    summary.num_instances = len(run.annotations)
    stem = video_stem(source, None)
    tracking = {
        "tracker": "sam2" if propagator is not None else "bytetrack",
        "every": every,
        "num_tracks": len({a["track_id"] for a in run.annotations} - {NO_TRACK}),
    }
    out = Path(out_dir)
    with OutputSet() as outputs:
        write_coco(
            out / f"{stem}.json",
            info={"video": video_info(summary, fmt, every=every), "tracking": tracking},
            images=run.images,
            categories=category_records(vocabulary),
            annotations=run.annotations,
            outputs=outputs,
        )
        mot = out / f"{stem}_mot"
        outputs.folder(mot)
        for name, rows in mot_challenge_rows(run.annotations, run.images).items():
            text = "".join(f"{row}\n" for row in rows)
            outputs.write(mot / f"{_file_name(name)}.txt", lambda p, t=text: p.write_text(t))
        outputs.commit()
    return summary


def _file_name(category: str) -> str:
    return re.sub(r"[^\w.-]+", "_", category)


@dataclass
class _TrackRun:
    """The :class:`~vlpart.inference.video.FrameProcessor` of ``vlpart track``: frames held
    until the tracker completes them, then drawn, and the COCO records collected."""

    tracker: FrameTracker
    fmt: VideoFormat
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    _arrays: dict[int, np.ndarray] = field(default_factory=dict)

    def push(self, index: int, seconds: float, array: np.ndarray) -> list[tuple[int, Image.Image]]:
        self._arrays[index] = array
        return self._emit(self.tracker.push(index, seconds, array))

    def finish(self) -> list[tuple[int, Image.Image]]:
        return self._emit(self.tracker.finish())

    def _emit(self, frames: list[TrackedFrame]) -> list[tuple[int, Image.Image]]:
        out = []
        for frame in frames:
            image_id = len(self.images) + 1
            record = frame_image(image_id, frame.index, frame.seconds, self.fmt)
            self.images.append({**record, "source": frame.source})
            records = frame.pred.to_coco(image_id)
            self.annotations.extend(
                with_track_ids(records, frame.track_ids, frame.parent_track_ids)
            )
            out.append((frame.index, tracked_overlay(frame, self._arrays.pop(frame.index))))
        return out
