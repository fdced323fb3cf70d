"""Video input for ``vlpart predict``: frames decoded with PyAV, segmented one at a time by
:meth:`~vlpart.PartSegmenter.predict`, drawn with :meth:`~vlpart.Prediction.render` and encoded
back (H.264) at the original frame rate and size.

Outputs for ``clip.mp4`` in ``out_dir``:

* ``clip.mp4``: every decoded frame with the overlay of the latest segmented frame (with
  ``every=N`` the N - 1 frames after a segmented one keep its overlay);
* ``clip.json``: a COCO file whose ``info.video`` holds the source, frame rate, size, frames
  decoded, ``every``, ``complete`` and the decoding ``error`` if the file ended early, then
  ``categories`` (as ``vlpart predict``'s ``dataset.json``), ``images`` (one per
  segmented frame: ``id``, ``frame_index``, ``time`` in seconds, ``width``, ``height``) and
  ``annotations``: the COCO results of those frames (RLE masks, ``label``, and ``parent``:
  the index, among the same frame's instances, of the object a part belongs to, or -1).

A truncated or corrupt file stops decoding with an error in the summary; the frames decoded
before it are in both outputs. Both files are written atomically.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vlpart.core.coco import category_records, write_coco
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import atomic_write
from vlpart.core.vocab import Vocabulary
from vlpart.inference.prediction import Prediction
from vlpart.inference.segmenter import PartSegmenter

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoSummary",
    "default_webcam",
    "is_video",
    "predict_video",
    "write_video",
]

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts")
# Camera input device (PyAV/FFmpeg format, default device) per platform.
WEBCAMS = {"linux": ("v4l2", "/dev/video0"), "darwin": ("avfoundation", "0")}
FALLBACK_RATE = Fraction(30)
CODEC = "h264"


@dataclass
class VideoSummary:
    """What one video run did.

    Attributes:
        source: the file (or camera device) read.
        frames_decoded: frames read (all of them are in the output video).
        frames_processed: frames segmented (``every``-th frame).
        num_instances: instances over all segmented frames.
        seconds: wall time of decoding, segmenting and encoding.
        error: why decoding stopped early (truncated or corrupt file), else None.
    """

    source: str
    frames_decoded: int = 0
    frames_processed: int = 0
    num_instances: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def frames_per_second(self) -> float:
        """Decoded frames per second of wall time."""
        return self.frames_decoded / self.seconds if self.seconds > 0 else 0.0


def is_video(path: str | Path) -> bool:
    """Whether ``path`` has a video file suffix (:data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def default_webcam() -> tuple[str, str]:
    """``(FFmpeg input format, device)`` of this platform's first camera.

    Raises:
        ValueError: a platform without a known camera input.
    """
    if sys.platform not in WEBCAMS:
        raise InputError(f"no webcam input known for platform {sys.platform!r}")
    return WEBCAMS[sys.platform]


def predict_video(
    segmenter: PartSegmenter,
    source: str | Path,
    *,
    vocabulary: Vocabulary,
    out_dir: str | Path,
    score_threshold: float | None = None,
    every: int = 1,
    input_format: str | None = None,
    progress: bool = True,
) -> VideoSummary:
    """Segment the frames of a video file or camera and write the outputs described in the
    module docstring as ``out_dir/<stem>.mp4`` and ``out_dir/<stem>.json``.

    Args:
        segmenter: the model and its text encoder.
        source: a video file, or a camera device with ``input_format`` (see
            :func:`default_webcam`); a camera runs until Ctrl-C.
        vocabulary: what to segment.
        score_threshold: keep instances scoring at least this (None: the segmenter's
            default, :data:`vlpart.inference.segmenter.SCORE_THRESH`).
        every: segment every N-th frame (frames 0, N, 2N, ...).
        input_format: FFmpeg input format for devices (``v4l2``, ``avfoundation``).
        progress: show a progress bar (frames/s).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``every`` < 1, a file that is not a readable video, or one whose first
            frame cannot be decoded.
    """
    if every < 1:
        raise InputError(f"every must be at least 1, got {every}")
    is_device = input_format is not None
    if not is_device and not Path(source).is_file():
        raise MissingFileError(f"{source}: no such video file")
    segmenter.text_embeddings(vocabulary)  # encode once up front; cached for every frame
    container = _open_video(source, input_format)
    stem = "webcam" if is_device else Path(source).stem
    out = Path(out_dir)
    summary = VideoSummary(source=str(source))
    with container:
        if not container.streams.video:
            raise InputError(f"{source}: no video stream")
        stream = container.streams.video[0]
        frames = _frames(container, stream, summary)
        try:
            first = next(frames)
        except StopIteration:
            why = summary.error or "it holds no frames"
            raise InputError(f"{source}: no frame could be decoded ({why})") from None
        height, width = first[1].shape[:2]
        run = _VideoRun(
            segmenter=segmenter,
            vocabulary=vocabulary,
            score_threshold=score_threshold,
            every=every,
            is_device=is_device,
            summary=summary,
            width=width,
            height=height,
            rate=stream.average_rate or stream.guessed_rate or FALLBACK_RATE,
            frames=_chain(first, frames),
            bar=tqdm(total=stream.frames or None, desc=stem, unit="frame", disable=not progress),
        )
        start = time.perf_counter()
        try:
            atomic_write(out / f"{stem}.mp4", run.encode)
        finally:
            run.bar.close()
        summary.seconds = time.perf_counter() - start
        if summary.error is None and stream.frames and summary.frames_decoded < stream.frames:
            summary.error = (
                f"{source}: truncated: decoded {summary.frames_decoded} of the "
                f"{stream.frames} frames its header lists"
            )
    run.write_coco(out / f"{stem}.json")
    return summary


def _open_video(source: str | Path, input_format: str | None):
    """The PyAV container of ``source``.

    Raises:
        ValueError: FFmpeg cannot open it.
    """
    import av

    try:
        return av.open(str(source), format=input_format)
    except av.error.FFmpegError as err:
        raise InputError(f"{source}: not a readable video ({err.strerror or err})") from None


@dataclass
class _VideoRun:
    """One video being segmented and re-encoded: the frames to read, what is collected for
    the COCO file (``images``, ``results``) and the counts of ``summary``."""

    segmenter: PartSegmenter
    vocabulary: Vocabulary
    score_threshold: float | None
    every: int
    is_device: bool
    summary: VideoSummary
    width: int
    height: int
    rate: Fraction
    frames: Iterator[tuple[float, np.ndarray]]  # (seconds, np.ndarray[H, W, 3] uint8 RGB)
    bar: tqdm
    images: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)

    def segment(self, index: int, seconds: float, array: np.ndarray) -> Prediction:
        """Segment frame ``index`` and record its image entry and COCO results."""
        pred = self.segmenter.predict(
            array, vocabulary=self.vocabulary, score_threshold=self.score_threshold
        )
        self.images.append(
            {
                "id": len(self.images) + 1,
                "frame_index": index,
                "time": round(seconds, 4),
                "width": self.width,
                "height": self.height,
            }
        )
        self.results.extend(pred.to_coco(len(self.images)))
        self.summary.frames_processed += 1
        self.summary.num_instances += len(pred)
        return pred

    def write_coco(self, path: Path) -> None:
        """The COCO file of the segmented frames, with ``info.video`` (module docstring)."""
        video_info = {
            "file_name": self.summary.source,
            "fps": float(self.rate),
            "width": self.width,
            "height": self.height,
            "frames_decoded": self.summary.frames_decoded,
            "every": self.every,
            "complete": self.summary.error is None,
            "error": self.summary.error,
        }
        write_coco(
            path,
            info={"video": video_info},
            images=self.images,
            categories=category_records(self.vocabulary),
            annotations=self.results,
        )

    def encode(self, tmp: Path) -> None:
        """Write every frame with the overlay of the latest segmented one to ``tmp``."""
        import av

        with _open_sink(tmp) as sink:
            video = _add_stream(sink, self.width, self.height, self.rate)
            try:
                for index, (seconds, array) in enumerate(self.frames):
                    if index % self.every == 0:
                        latest = self.segment(index, seconds, array)
                    frame = av.VideoFrame.from_image(latest.render(array))
                    frame.pts = index
                    for packet in video.encode(frame):
                        sink.mux(packet)
                    self.summary.frames_decoded += 1
                    self.bar.update(1)
            except KeyboardInterrupt:  # a camera's normal stop; a file keeps what it has
                if not self.is_device:
                    self.summary.error = (
                        f"{self.summary.source}: interrupted after "
                        f"{self.summary.frames_decoded} frames"
                    )
            for packet in video.encode():
                sink.mux(packet)


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: float) -> Path:
    """Encode ``np.ndarray[H, W, 3]`` uint8 RGB frames as an H.264 MP4 (index at the front).

    Returns:
        ``path``.
    """
    import av

    path = Path(path)
    with _open_sink(path) as sink:
        video = None
        for array in frames:
            if video is None:
                video = _add_stream(sink, array.shape[1], array.shape[0], Fraction(fps))
            for packet in video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                sink.mux(packet)
        if video is None:
            raise InputError(f"{path}: no frames to write")
        for packet in video.encode():
            sink.mux(packet)
    return path


def _open_sink(path: Path):
    """An MP4 container for writing, with its index at the front (playable while streaming;
    a truncated copy keeps the frames before the cut)."""
    import av

    return av.open(str(path), "w", format="mp4", options={"movflags": "faststart"})


def _add_stream(sink, width: int, height: int, rate: Fraction):
    video = sink.add_stream(CODEC, rate=rate)
    video.width, video.height = width, height
    # 4:2:0 chroma needs even sides; odd-sized videos keep full chroma.
    video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    return video


def _frames(container, stream, summary: VideoSummary) -> Iterator[tuple[float, np.ndarray]]:
    """``(time in seconds, np.ndarray[H, W, 3] uint8 RGB)`` per decoded frame; a decoding error
    ends the iteration, recording why in ``summary.error``."""
    import av

    decoded = container.decode(stream)
    while True:
        try:
            frame = next(decoded)
        except StopIteration:
            return
        except av.error.FFmpegError as err:
            summary.error = (
                f"{summary.source}: decoding stopped after {summary.frames_decoded} frames "
                f"({err.strerror or err})"
            )
            return
        yield float(frame.time or 0.0), frame.to_ndarray(format="rgb24")


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest
