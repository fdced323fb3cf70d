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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from vlpart.core.coco import category_records, write_coco
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import atomic_write
from vlpart.core.vocab import Vocabulary
from vlpart.inference.prediction import Prediction
from vlpart.inference.segmenter import PartSegmenter

__all__ = [
    "VIDEO_SUFFIXES",
    "FrameProcessor",
    "VideoFormat",
    "VideoSummary",
    "default_webcam",
    "frame_image",
    "is_video",
    "predict_video",
    "process_video",
    "video_info",
    "video_stem",
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


@dataclass(frozen=True)
class VideoFormat:
    """The decoded stream: frame ``width`` and ``height`` in pixels and frame ``rate`` (1/s)."""

    width: int
    height: int
    rate: Fraction


class FrameProcessor(Protocol):
    """What :func:`process_video` feeds the decoded frames to. Both methods return the frames
    ready to encode, ``(frame index, annotated PIL image)`` in index order; every pushed frame
    is returned exactly once, by :meth:`push` or by :meth:`finish` (a processor may hold frames
    back until a later one arrives)."""

    def push(
        self, index: int, seconds: float, array: np.ndarray
    ) -> list[tuple[int, Image.Image]]: ...

    def finish(self) -> list[tuple[int, Image.Image]]: ...


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
    segmenter.text_embeddings(vocabulary)  # encode once up front; cached for every frame
    runs: list[_SegmentEvery] = []

    def make(fmt: VideoFormat) -> _SegmentEvery:
        runs.append(_SegmentEvery(segmenter, vocabulary, score_threshold, every, fmt))
        return runs[0]

    summary, fmt = process_video(
        source, make, out_dir=out_dir, input_format=input_format, progress=progress
    )
    run = runs[0]
    summary.frames_processed = len(run.images)
    summary.num_instances = len(run.results)
    write_coco(
        Path(out_dir) / f"{video_stem(source, input_format)}.json",
        info={"video": video_info(summary, fmt, every=every)},
        images=run.images,
        categories=category_records(vocabulary),
        annotations=run.results,
    )
    return summary


def video_stem(source: str | Path, input_format: str | None) -> str:
    """The output name of a video: the file's stem, ``webcam`` for a camera."""
    return "webcam" if input_format is not None else Path(source).stem


def video_info(summary: VideoSummary, fmt: VideoFormat, *, every: int) -> dict:
    """The ``info.video`` record of a COCO file of a video (module docstring)."""
    return {
        "file_name": summary.source,
        "fps": float(fmt.rate),
        "width": fmt.width,
        "height": fmt.height,
        "frames_decoded": summary.frames_decoded,
        "every": every,
        "complete": summary.error is None,
        "error": summary.error,
    }


def process_video(
    source: str | Path,
    make_processor: Callable[[VideoFormat], FrameProcessor],
    *,
    out_dir: str | Path,
    input_format: str | None = None,
    progress: bool = True,
) -> tuple[VideoSummary, VideoFormat]:
    """Decode ``source``, pass every frame through the processor ``make_processor`` builds for
    its format, and encode the frames it returns as ``out_dir/<stem>.mp4`` (atomically, same
    rate and size; :func:`video_stem`). A truncated or corrupt file ends decoding with
    ``summary.error`` set; the frames before it are kept. ``frames_processed`` and
    ``num_instances`` of the summary are the caller's to fill.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not a readable video, or one whose first frame cannot be
            decoded (nothing is written then).
    """
    is_device = input_format is not None
    if not is_device and not Path(source).is_file():
        raise MissingFileError(f"{source}: no such video file")
    container = _open_video(source, input_format)
    stem = video_stem(source, input_format)
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
        fmt = VideoFormat(
            width, height, stream.average_rate or stream.guessed_rate or FALLBACK_RATE
        )
        run = _VideoRun(
            processor=make_processor(fmt),
            is_device=is_device,
            summary=summary,
            fmt=fmt,
            frames=_chain(first, frames),
            bar=tqdm(total=stream.frames or None, desc=stem, unit="frame", disable=not progress),
        )
        start = time.perf_counter()
        try:
            atomic_write(Path(out_dir) / f"{stem}.mp4", run.encode)
        finally:
            run.bar.close()
        summary.seconds = time.perf_counter() - start
        if summary.error is None and stream.frames and summary.frames_decoded < stream.frames:
            summary.error = (
                f"{source}: truncated: decoded {summary.frames_decoded} of the "
                f"{stream.frames} frames its header lists"
            )
    return summary, fmt


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
class _SegmentEvery:
    """The processor of ``vlpart predict``: segments every ``every``-th frame, draws the latest
    segmented frame's overlay on each frame, and collects the COCO ``images`` and
    ``results``."""

    segmenter: PartSegmenter
    vocabulary: Vocabulary
    score_threshold: float | None
    every: int
    fmt: VideoFormat
    images: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    latest: Prediction | None = None

    def push(self, index: int, seconds: float, array: np.ndarray) -> list[tuple[int, Image.Image]]:
        if index % self.every == 0:
            self.latest = self.segmenter.predict(
                array, vocabulary=self.vocabulary, score_threshold=self.score_threshold
            )
            self.images.append(frame_image(len(self.images) + 1, index, seconds, self.fmt))
            self.results.extend(self.latest.to_coco(len(self.images)))
        return [(index, self.latest.render(array))]

    def finish(self) -> list[tuple[int, Image.Image]]:
        return []


def frame_image(image_id: int, index: int, seconds: float, fmt: VideoFormat) -> dict:
    """The COCO ``images`` record of frame ``index`` at ``seconds``."""
    return {
        "id": image_id,
        "frame_index": index,
        "time": round(seconds, 4),
        "width": fmt.width,
        "height": fmt.height,
    }


@dataclass
class _VideoRun:
    """One video being processed and re-encoded: the frames to read and the counts of
    ``summary``."""

    processor: FrameProcessor
    is_device: bool
    summary: VideoSummary
    fmt: VideoFormat
    frames: Iterator[tuple[float, np.ndarray]]  # (seconds, np.ndarray[H, W, 3] uint8 RGB)
    bar: tqdm

    def encode(self, tmp: Path) -> None:
        """Write every frame the processor returns to ``tmp``."""
        import av

        with _open_sink(tmp) as sink:
            video = _add_stream(sink, self.fmt.width, self.fmt.height, self.fmt.rate)

            def put(ready: list[tuple[int, Image.Image]]) -> None:
                for index, image in ready:
                    frame = av.VideoFrame.from_image(image)
                    frame.pts = index
                    for packet in video.encode(frame):
                        sink.mux(packet)
                    self.bar.update(1)

            try:
                for index, (seconds, array) in enumerate(self.frames):
                    self.summary.frames_decoded += 1
                    put(self.processor.push(index, seconds, array))
            except KeyboardInterrupt:  # a camera's normal stop; a file keeps what it has
                if not self.is_device:
                    self.summary.error = (
                        f"{self.summary.source}: interrupted after "
                        f"{self.summary.frames_decoded} frames"
                    )
            put(self.processor.finish())
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
