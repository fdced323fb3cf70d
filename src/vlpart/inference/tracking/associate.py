"""Tracking objects and their parts through a video: persistent ``track_id`` per instance,
parts associated only within their parent object's track.

Association is ByteTrack (Zhang et al., ECCV 2022) as implemented by Roboflow's ``trackers``
package (the maintained successor of ``supervision``'s ``sv.ByteTrack``): a Kalman filter on
each box, then two rounds of IoU matching (high-scoring detections first, the low-scoring ones
against the tracks left over). vlpart runs one tracker per *key*:

* objects: one per object category (``dog``);
* parts with a parent object: one per (the parent's ``track_id``, part category), so a part can
  only ever be matched to parts of the same parent track and never jumps to another object;
  their boxes are given in the parent box's frame, where a head stays put however its dog
  runs;
* parts without a parent (a vocabulary of parts only, a part outside every object): one per
  part category, with ``parent_track_id`` -1.

Every track gets its id on its first detection (ByteTrack's first-frame activation; the
``trackers`` implementation would wait for a second one). Ids are unique over the whole video,
objects and parts together, starting at 1; -1 marks a detection no track took (scoring below
:data:`ACTIVATION_SCORE`, or a part of an untracked object).

With ``every=N`` only frames 0, N, 2N, ... are segmented. Between two segmented frames a track
seen in both gets its box linearly interpolated and the earlier frame's mask warped onto that
box (``source`` ``interpolated``), or, with :class:`Sam2Propagator`, SAM 2's video predictor
propagates the earlier frame's masks (``sam2``). Frames after the last segmented one keep its
tracks as they were (``held``). A track seen in only one of the two segmented frames (entering
or leaving) is absent in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

from vlpart.core.errors import InputError, MissingDependencyError
from vlpart.inference.prediction import Prediction, palette

__all__ = [
    "ACTIVATION_SCORE",
    "FrameTracker",
    "MaskPropagator",
    "PartTracker",
    "TrackedFrame",
    "tracked_overlay",
    "warp_mask",
]

logger = logging.getLogger(__name__)

# ByteTrack settings (Zhang et al., 2022 use 0.6 / 0.1 / 30 frames on MOT17; the detector's
# scores here start at its 0.3 threshold): detections scoring at least HIGH_SCORE are matched
# first; a track is started by a detection scoring at least ACTIVATION_SCORE; a match needs an
# IoU of at least MATCH_IOU; a track is kept LOST_SECONDS after its last match (re-entry).
HIGH_SCORE = 0.5
ACTIVATION_SCORE = 0.4
MATCH_IOU = 0.1
LOST_SECONDS = 2.0
# Parts with a parent are tracked in the parent box's frame, scaled to this many units.
PARENT_FRAME_SIZE = 100.0
# ByteTrack's lost-track buffer is given in frames of a 30 frames/s video.
_REFERENCE_RATE = 30.0
NO_TRACK = -1


@dataclass
class TrackedFrame:
    """One frame's tracked instances.

    Attributes:
        index: frame index in the video (0-based).
        seconds: presentation time.
        pred: the instances (``parent`` indexes into the same frame's instances).
        track_ids (np.ndarray[N], int64): each instance's track, -1 for an untracked one.
        parent_track_ids (np.ndarray[N], int64): the track of each part's parent object, -1
            for objects and parts without a tracked parent.
        source: ``detector`` (segmented), ``interpolated`` or ``sam2`` (between two segmented
            frames), ``held`` (after the last segmented frame).
    """

    index: int
    seconds: float
    pred: Prediction
    track_ids: np.ndarray
    parent_track_ids: np.ndarray
    source: str = "detector"


def _byte_track_class():
    """``trackers.ByteTrackTracker`` with every track activated on its first detection."""
    try:
        from trackers import ByteTrackTracker
    except ImportError:
        raise MissingDependencyError(
            "tracking needs the trackers package: pip install 'vlpart[track]'"
        ) from None

    class FirstFrameByteTrack(ByteTrackTracker):
        def _spawn_new_tracks(
            self, boxes, confidences, unmatched_high, high_indices, out_indices, out_ids
        ) -> None:
            # The parent appends one output per unmatched detection, in order, and one
            # tracklet per detection that clears the activation score; id those at once.
            first_out, first_track = len(out_ids), len(self.tracks)
            super()._spawn_new_tracks(
                boxes, confidences, unmatched_high, high_indices, out_indices, out_ids
            )
            born = iter(self.tracks[first_track:])
            for k, local in enumerate(unmatched_high):
                if float(confidences[int(high_indices[local])]) >= self.track_activation_threshold:
                    tracklet = next(born)
                    tracklet.tracker_id = self._allocate_tracker_id()
                    out_ids[first_out + k] = tracklet.tracker_id

    return FirstFrameByteTrack


class PartTracker:
    """Gives the instances of successive segmented frames persistent track ids (module
    docstring); holds the trackers, so one instance follows one video.

    Args:
        frame_rate: the video's frames per second.
        lost_seconds: how long a track survives without a match.
    """

    def __init__(self, *, frame_rate: float, lost_seconds: float = LOST_SECONDS) -> None:
        if frame_rate <= 0:
            raise InputError(f"frame_rate must be positive, got {frame_rate}")
        self._make = _byte_track_class()
        self.frame_rate = float(frame_rate)
        self.lost_seconds = lost_seconds
        # key -> (its ByteTrack, that tracker's own ids -> video-wide track ids)
        self._trackers: dict[tuple, tuple[object, dict[int, int]]] = {}
        self._last_seen: dict[tuple, float] = {}
        self._num_ids = 0

    def update(self, pred: Prediction, seconds: float) -> tuple[np.ndarray, np.ndarray]:
        """Associate one segmented frame's instances with the tracks.

        Args:
            pred: the frame's instances (``is_part`` and ``parent`` set).
            seconds: the frame's time (strictly increasing from call to call).

        Returns:
            ``(track_ids, parent_track_ids)``, both ``np.ndarray[N]`` int64 (-1: none).
        """
        n = len(pred)
        track_ids = np.full(n, NO_TRACK, np.int64)
        parent_ids = np.full(n, NO_TRACK, np.int64)
        is_part = _is_part(pred)
        groups: dict[tuple, list[int]] = {}
        for i in np.flatnonzero(~is_part):
            groups.setdefault(("object", pred.labels[i]), []).append(int(i))
        self._assign("object", groups, pred.boxes, pred.scores, seconds, track_ids)
        groups = {}
        for i in np.flatnonzero(is_part):
            parent = int(pred.parent[i])
            if parent >= 0:
                parent_ids[i] = track_ids[parent]
                if parent_ids[i] == NO_TRACK:
                    continue  # a part is tracked only within a tracked parent
            groups.setdefault(("part", int(parent_ids[i]), pred.labels[i]), []).append(int(i))
        frames = self._object_boxes(pred, track_ids, ~is_part)
        boxes = _in_parent_frame(pred.boxes, frames, pred.parent, is_part)
        self._assign("part", groups, boxes, pred.scores, seconds, track_ids)
        self._forget(seconds)
        return track_ids, parent_ids

    def _assign(
        self,
        kind: str,
        groups: dict[tuple, list[int]],
        boxes: np.ndarray,
        scores: np.ndarray,
        seconds: float,
        out: np.ndarray,
    ) -> None:
        """Run each key's tracker on its instances and write their track ids into ``out``;
        trackers of keys without instances this frame are updated empty (they age)."""
        import supervision as sv

        keys = set(groups) | {k for k in self._trackers if k[0] == kind}
        for key in sorted(keys, key=repr):
            rows = np.asarray(groups.get(key, []), np.int64)
            if key not in self._trackers:
                self._trackers[key] = (
                    self._make(
                        lost_track_buffer=round(self.lost_seconds * _REFERENCE_RATE),
                        frame_rate=self.frame_rate,
                        track_activation_threshold=ACTIVATION_SCORE,
                        minimum_consecutive_frames=1,
                        minimum_iou_threshold=MATCH_IOU,
                        high_conf_det_threshold=HIGH_SCORE,
                    ),
                    {},
                )
            detections = sv.Detections(
                xyxy=boxes[rows].astype(np.float64).reshape(-1, 4),
                confidence=scores[rows].astype(np.float64),
                data={"row": rows},
            )
            tracker, ids = self._trackers[key]
            result = tracker.update(detections, timestamp=seconds)
            if len(rows):
                self._last_seen[key] = seconds
            for row, local in zip(result.data.get("row", []), result.tracker_id, strict=True):
                if local == NO_TRACK:
                    continue
                if int(local) not in ids:
                    self._num_ids += 1
                    ids[int(local)] = self._num_ids
                out[row] = ids[int(local)]

    def _object_boxes(self, pred: Prediction, track_ids: np.ndarray, objects: np.ndarray):
        """Each instance's box, the tracked objects' replaced by their track's filtered
        (Kalman) box: np.ndarray[N, 4] XYXY pixels, steadier than one frame's detection."""
        filtered = {}
        for key, (tracker, ids) in self._trackers.items():
            if key[0] == "object":
                for tracklet in tracker.tracks:
                    if tracklet.tracker_id in ids:
                        filtered[ids[tracklet.tracker_id]] = tracklet.get_state_bbox()
        out = pred.boxes.astype(np.float64).copy()
        for i in np.flatnonzero(objects & (track_ids != NO_TRACK)):
            out[i] = filtered.get(int(track_ids[i]), out[i])
        return out

    def _forget(self, seconds: float) -> None:
        """Drop the trackers of keys unseen for longer than ``lost_seconds`` (their tracks
        are over; a parent track that ended takes its parts' tracker with it)."""
        for key in [k for k, t in self._last_seen.items() if seconds - t > self.lost_seconds]:
            del self._trackers[key], self._last_seen[key]
        for key in [k for k in self._trackers if k not in self._last_seen]:
            del self._trackers[key]


def _in_parent_frame(
    boxes: np.ndarray, frames: np.ndarray, parent: np.ndarray, is_part: np.ndarray
) -> np.ndarray:
    """The boxes (np.ndarray[N, 4], XYXY pixels) of parts with a parent in the frame of the
    parent's box in ``frames`` (0..PARENT_FRAME_SIZE across it), the others unchanged. A part moves
    little in its object's frame however fast the object moves, so its track survives the
    sparse frames of ``every=N`` and the object's own motion."""
    out = boxes.astype(np.float64).copy()
    for i in np.flatnonzero(is_part & (parent >= 0)):
        x0, y0, x1, y1 = frames[parent[i]]
        scale = PARENT_FRAME_SIZE / np.maximum([x1 - x0, y1 - y0], 1e-6)
        out[i] = (boxes[i] - [x0, y0, x0, y0]) * np.tile(scale, 2)
    return out


def _is_part(pred: Prediction) -> np.ndarray:
    if pred.is_part is None:
        raise InputError("tracking needs the prediction's is_part flags (PartSegmenter sets them)")
    return np.asarray(pred.is_part, bool)


class MaskPropagator(Protocol):
    """Carries a segmented frame's masks to the frames after it (SAM 2's video predictor)."""

    def propagate(self, frames: Sequence[np.ndarray], masks: np.ndarray) -> np.ndarray:
        """Args:
            frames: ``np.ndarray[H, W, 3]`` uint8 RGB, the segmented frame first.
            masks (np.ndarray[N, H, W], bool): its instances' masks.

        Returns:
            np.ndarray[len(frames) - 1, N, H, W], bool: the masks on the following frames.
        """
        ...


@dataclass
class FrameTracker:
    """Tracks a video frame by frame: segments every ``every``-th frame with ``predict``,
    associates it (:class:`PartTracker`) and fills the frames in between (module docstring).

    Frames are pushed in order; :meth:`push` returns the frames completed so far, which lag up
    to ``every`` frames behind (the frames after a segmented one wait for the next), and
    :meth:`finish` the rest.
    """

    predict: Callable[[np.ndarray], Prediction]
    tracker: PartTracker
    every: int = 1
    propagator: MaskPropagator | None = None
    _key: TrackedFrame | None = None
    _between: list[tuple[int, float, np.ndarray]] = field(default_factory=list)
    _key_array: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise InputError(f"every must be at least 1, got {self.every}")

    def push(self, index: int, seconds: float, array: np.ndarray) -> list[TrackedFrame]:
        """Take frame ``index`` (``np.ndarray[H, W, 3]`` uint8 RGB at ``seconds``)."""
        if index % self.every:
            self._between.append((index, seconds, array))
            return []
        pred = self.predict(array)
        track_ids, parent_ids = self.tracker.update(pred, seconds)
        key = TrackedFrame(index, seconds, pred, track_ids, parent_ids)
        done = self._fill(key)
        self._key, self._key_array, self._between = key, array, []
        return done + [key]

    def finish(self) -> list[TrackedFrame]:
        """The frames after the last segmented one (its tracks, ``held``)."""
        done = self._fill(None)
        self._between = []
        return done

    def _fill(self, nxt: TrackedFrame | None) -> list[TrackedFrame]:
        """The frames between the previous segmented frame and ``nxt``."""
        prev = self._key
        if prev is None or not self._between:
            return []
        tracked = np.flatnonzero(prev.track_ids != NO_TRACK)
        if self.propagator is not None:
            arrays = [self._key_array] + [a for _, _, a in self._between]
            masks = self.propagator.propagate(arrays, prev.pred.masks[tracked])
            return [
                _propagated(prev, tracked, index, seconds, masks[k])
                for k, (index, seconds, _) in enumerate(self._between)
            ]
        out = []
        for index, seconds, _ in self._between:
            if nxt is None:
                out.append(_between(prev, tracked, None, index, seconds, 0.0, "held"))
                continue
            t = (index - prev.index) / (nxt.index - prev.index)
            out.append(_between(prev, tracked, nxt, index, seconds, t, "interpolated"))
        return out


def _between(
    prev: TrackedFrame,
    tracked: np.ndarray,
    nxt: TrackedFrame | None,
    index: int,
    seconds: float,
    t: float,
    source: str,
) -> TrackedFrame:
    """A frame a fraction ``t`` of the way from ``prev`` to ``nxt``: the tracks of ``prev``
    that ``nxt`` also holds (all of them without ``nxt``), boxes interpolated and masks
    warped onto them."""
    rows, boxes = [], []
    later = {} if nxt is None else {int(i): k for k, i in enumerate(nxt.track_ids) if i >= 0}
    for i in tracked:
        tid = int(prev.track_ids[i])
        if nxt is not None and tid not in later:
            continue
        box = prev.pred.boxes[i]
        if nxt is not None:
            box = (1 - t) * box + t * nxt.pred.boxes[later[tid]]
        rows.append(int(i))
        boxes.append(box)
    pred = prev.pred.subset(rows)
    pred.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    pred.masks = (
        np.stack(
            [
                warp_mask(m, src, dst)
                for m, src, dst in zip(
                    prev.pred.masks[rows], prev.pred.boxes[rows], pred.boxes, strict=True
                )
            ]
        )
        if rows
        else pred.masks
    )
    return TrackedFrame(
        index, seconds, pred, prev.track_ids[rows], prev.parent_track_ids[rows], source
    )


def _propagated(
    prev: TrackedFrame, tracked: np.ndarray, index: int, seconds: float, masks: np.ndarray
) -> TrackedFrame:
    """``prev``'s tracks with the propagated ``masks`` ([N, H, W] bool); instances whose mask
    came out empty are left out, boxes are those of the masks."""
    keep = [k for k in range(len(tracked)) if masks[k].any()]
    rows = tracked[keep]
    pred = prev.pred.subset(rows)
    pred.masks = masks[keep].reshape(-1, *prev.pred.masks.shape[1:])
    pred.boxes = np.array([_mask_box(m) for m in pred.masks], np.float32).reshape(-1, 4)
    return TrackedFrame(
        index, seconds, pred, prev.track_ids[rows], prev.parent_track_ids[rows], "sam2"
    )


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def warp_mask(mask: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Move and scale ``mask`` (np.ndarray[H, W] bool) so that box ``src`` lands on ``dst``
    (XYXY pixels; nearest-neighbour, pixels falling outside the image are dropped)."""
    height, width = mask.shape
    scale = (dst[2:] - dst[:2]) / np.maximum(src[2:] - src[:2], 1e-6)
    # For each output pixel centre, the source pixel it comes from.
    xs = (np.arange(width) + 0.5 - dst[0]) / scale[0] + src[0]
    ys = (np.arange(height) + 0.5 - dst[1]) / scale[1] + src[1]
    cols, rows = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    col_ok, row_ok = (cols >= 0) & (cols < width), (rows >= 0) & (rows < height)
    out = mask[rows.clip(0, height - 1)[:, None], cols.clip(0, width - 1)[None, :]]
    return out & row_ok[:, None] & col_ok[None, :]


def tracked_overlay(frame: TrackedFrame, array: np.ndarray) -> Image.Image:
    """``array`` (``np.ndarray[H, W, 3]`` uint8 RGB) with ``frame``'s tracked instances drawn
    in one colour per track id and tagged ``label #id``."""
    rows = np.flatnonzero(frame.track_ids != NO_TRACK)
    pred = frame.pred.subset(rows)
    ids = frame.track_ids[rows]
    table = palette(int(ids.max()) + 1 if len(ids) else 0)
    colors = [table[int(i)] for i in ids]
    tags = [f"{label} #{int(i)}" for label, i in zip(pred.labels, ids, strict=True)]
    return pred.render(
        array,
        top_k_per_label=None,
        overlap_thresh=None,
        max_instances=None,
        colors=colors,
        tags=tags,
    )
