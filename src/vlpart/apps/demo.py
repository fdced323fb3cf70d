"""The web demo (``vlpart demo``): a local page that segments the objects and parts a typed
vocabulary names.

Two layers:

* :class:`DemoHandler` is the request handler, a plain callable (no Gradio in it): an uploaded
  image file, a vocabulary spec, a granularity, a score threshold and a prompt template in; a
  :class:`DemoResult` (overlay, instance table, COCO results, a status message) out. Every
  problem a user can cause (no image, a broken or oversized image, a bad vocabulary or template)
  comes back as a one-line message in the result, never as an exception, so the server keeps
  serving.
* :func:`build_app` lays the page out with Gradio and :func:`serve` runs it: bound to
  127.0.0.1 by default, uploads and pixels limited (:class:`DemoLimits`), requests queued with
  one model run at a time, no analytics and no share links. Gradio is imported only here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vlpart.core.errors import InputError, MissingDependencyError
from vlpart.core.fileio import MAX_PIXELS_ENV, atomic_write, read_image, write_json_atomic
from vlpart.core.vocab import (
    DEFAULT_TEMPLATE,
    GRANULARITIES,
    PROMPT_TEMPLATES,
    Vocabulary,
    at_granularity,
    parse_vocabulary,
)
from vlpart.inference.prediction import Prediction
from vlpart.inference.segmenter import SCORE_THRESH

if TYPE_CHECKING:
    import gradio as gr

    from vlpart.inference.segmenter import PartSegmenter

__all__ = [
    "AS_TYPED",
    "DemoHandler",
    "DemoLimits",
    "DemoResult",
    "TABLE_HEADERS",
    "build_app",
    "find_examples",
    "instance_rows",
    "serve",
    "write_downloads",
]

logger = logging.getLogger(__name__)

# The granularity choice that takes the vocabulary as typed.
AS_TYPED = "as_typed"
GRANULARITY_CHOICES = [
    ("as typed", AS_TYPED),
    ("objects", "objects"),
    ("objects + named parts", "parts"),
    ("every part", "every_part"),
]
TEMPLATE_CHOICES = [
    (PROMPT_TEMPLATES[name].format(object="dog", part="head") + f"  ({name})", name)
    for name in PROMPT_TEMPLATES
]
TABLE_HEADERS = ["#", "label", "score", "box (x0, y0, x1, y1)", "parent"]
DEFAULT_VOCABULARY = "dog; dog:head,torso,leg,tail"
# Longest vocabulary spec and largest vocabulary a request may ask for (LVIS has 1,203 names).
MAX_VOCAB_CHARS = 20_000
MAX_CATEGORIES = 2_000
# Per-request download folders kept on disk (Gradio copies the files into its own cache).
KEEP_REQUEST_DIRS = 16
# Gradio's cache (uploads, served outputs): swept every 10 minutes of files older than an hour.
CACHE_SWEEP = (600, 3600)
MAX_EXAMPLES = 8


@dataclass(frozen=True)
class DemoLimits:
    """What one request may cost.

    Attributes:
        max_upload_mb: largest uploaded file, in MB (checked by the server before any decoding).
        max_pixels: largest ``width * height`` decoded; larger images (decompression bombs
            included) are refused from their header. Instance masks are kept at full
            resolution, so this also bounds the memory of a request.
        concurrency: model runs at a time; further requests wait in the queue.
        queue_size: requests allowed to wait; beyond that the page says the server is busy.
    """

    max_upload_mb: float = 25.0
    max_pixels: int = 24_000_000
    concurrency: int = 1
    queue_size: int = 16

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_pixels", "concurrency", "queue_size"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class DemoResult:
    """The answer to one request.

    Attributes:
        ok: False when the request could not be run (``message`` says why).
        message: one line for the page: a summary or the problem.
        overlay (np.ndarray[H, W, 3] uint8 | None): the image with masks, boxes and tags.
        rows: the instance table, one row per instance in score order (see
            :data:`TABLE_HEADERS`); ``parent`` names the object instance a part lies in.
        coco: COCO results (``Prediction.to_coco``; RLE masks, ``label`` and ``parent``).
        name: file-name stem for the downloads (from the uploaded file's name).
    """

    ok: bool
    message: str
    overlay: np.ndarray | None = None
    rows: list[list] = field(default_factory=list)
    coco: list[dict] = field(default_factory=list)
    name: str = "image"


class DemoHandler:
    """The demo's request handler: one :class:`PartSegmenter` (its text-embedding cache is
    shared by all requests), called once per request, safe to call from several threads.

    Args:
        segmenter: the model; it holds no per-image state.
        limits: the per-request limits (only ``max_pixels`` is checked here; the server
            enforces the others).
    """

    def __init__(self, segmenter: PartSegmenter, *, limits: DemoLimits | None = None) -> None:
        self.segmenter = segmenter
        self.limits = limits or DemoLimits()

    def __call__(
        self,
        image: str | Path | None,
        vocabulary: str,
        granularity: str = AS_TYPED,
        score_threshold: float = SCORE_THRESH,
        template: str = DEFAULT_TEMPLATE,
    ) -> DemoResult:
        """Segment ``vocabulary`` in the image file ``image``.

        Args:
            image: path of the uploaded file (decoded here, under the pixel limit), or None.
            vocabulary: a spec: ``dog``, ``dog:head,torso``, ``dog:*``, ``pascal_part``, ...
                (not a file name: the page never reads files named by a user).
            granularity: ``as_typed`` or one of :data:`vlpart.core.vocab.GRANULARITIES`.
            score_threshold: keep instances scoring at least this, in [0, 1].
            template: a prompt-template name or a string with ``{object}`` and ``{part}``.
        """
        start = time.perf_counter()
        try:
            vocab = self._vocabulary(vocabulary, granularity)
            vocab.prompts(template)  # validates the template before any work
            threshold = _threshold(score_threshold)
            array, name = self._image(image)
            pred = self.segmenter.predict(
                array, vocabulary=vocab, score_threshold=threshold, template=template
            )
        except (ValueError, FileNotFoundError, KeyError) as err:
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            return DemoResult(ok=False, message=_without_dirs(message, image))
        except Exception as err:  # a request must never take the server down
            logger.exception("request failed")
            return DemoResult(
                ok=False,
                message=f"internal error ({type(err).__name__}: {err}); see the server log",
            )
        seconds = time.perf_counter() - start
        return DemoResult(
            ok=True,
            message=_summary(pred, vocab, threshold, array.shape, seconds),
            overlay=np.asarray(pred.render(array)),
            rows=instance_rows(pred),
            coco=pred.to_coco(image_id=1),
            name=name,
        )

    def _vocabulary(self, spec: str, granularity: str) -> Vocabulary:
        text = (spec or "").strip()
        if not text:
            raise InputError("type a vocabulary, e.g. 'dog:head,torso,leg,tail' or 'pascal_part'")
        if len(text) > MAX_VOCAB_CHARS:
            raise InputError(f"the vocabulary is longer than {MAX_VOCAB_CHARS} characters")
        if text.lower().endswith((".txt", ".vocab")):
            raise InputError(
                f"{text!r}: the demo does not read vocabulary files; type the entries "
                "(dog; dog:head,leg) or a built-in name (pascal_part)"
            )
        vocab = parse_vocabulary(text)
        if granularity != AS_TYPED:
            if granularity not in GRANULARITIES:
                raise InputError(f"unknown granularity {granularity!r}")
            vocab = at_granularity(vocab, granularity)
        if len(vocab) > MAX_CATEGORIES:
            raise InputError(
                f"the vocabulary has {len(vocab)} categories; the demo takes at most "
                f"{MAX_CATEGORIES}"
            )
        return vocab

    def _image(self, image: str | Path | None) -> tuple[np.ndarray, str]:
        if image is None or not str(image):
            raise InputError("upload an image first (or pick an example)")
        path = Path(image)
        try:
            array = read_image(path, max_pixels=self.limits.max_pixels)
        except ValueError as err:
            # The demo's limit is its --max-pixels, not the library's environment variable.
            hint = f"set ${MAX_PIXELS_ENV} to read it"
            raise InputError(
                str(err).replace(hint, "'vlpart demo --max-pixels N' reads it")
            ) from None
        return array, _file_stem(path)


def instance_rows(pred: Prediction) -> list[list]:
    """The instance table of a prediction (:data:`TABLE_HEADERS`), boxes rounded to pixels."""
    rows = []
    for i in range(len(pred)):
        box = ", ".join(f"{v:.0f}" for v in pred.boxes[i])
        parent = int(pred.parent[i])
        rows.append(
            [
                i,
                pred.labels[i],
                round(float(pred.scores[i]), 3),
                box,
                f"#{parent} {pred.labels[parent]}" if parent >= 0 else "",
            ]
        )
    return rows


def write_downloads(result: DemoResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<name>_results.json`` (the COCO results) and ``<name>_overlay.png`` into
    ``out_dir``; returns both paths."""
    if result.overlay is None:
        raise InputError("a failed request has nothing to download")
    out = Path(out_dir)
    json_path = write_json_atomic(result.coco, out / f"{result.name}_results.json")
    overlay = Image.fromarray(result.overlay)
    png_path = atomic_write(
        out / f"{result.name}_overlay.png", lambda tmp: overlay.save(tmp, "PNG")
    )
    return json_path, png_path


def _threshold(value: float | None) -> float:
    try:
        threshold = float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"the score threshold must be between 0 and 1, got {value!r}")
    return threshold


def _file_stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("_.") or "image"


def _without_dirs(message: str, image: str | Path | None) -> str:
    """Name an uploaded file by its name, not by its path in the server's cache."""
    if image is not None and str(image):
        message = message.replace(str(Path(image)), Path(image).name)
    return message


def _summary(
    pred: Prediction, vocab: Vocabulary, threshold: float, shape: tuple[int, ...], seconds: float
) -> str:
    size = f"{shape[1]}x{shape[0]} px"
    if not len(pred):
        return (
            f"no instance of the {len(vocab)} categories scored at least {threshold:.2f} "
            f"({size}, {seconds:.1f} s); lower the threshold or change the vocabulary"
        )
    found = len(set(pred.labels))
    return (
        f"{len(pred)} instances of {found} of the {len(vocab)} categories with score >= "
        f"{threshold:.2f} ({size}, {seconds:.1f} s)"
    )


def _import_gradio():
    """Gradio, with its usage analytics off before it is imported."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise MissingDependencyError(
            "the web demo needs Gradio: pip install 'vlpart[demo]'"
        ) from None
    return gradio


class _RequestFiles:
    """Per-request download folders under one temporary root; the oldest beyond
    :data:`KEEP_REQUEST_DIRS` are removed (Gradio serves its own copies)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vlpart-demo-"))
        self._dirs: deque[Path] = deque()

    def new_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(dir=self.root))
        self._dirs.append(path)
        while len(self._dirs) > KEEP_REQUEST_DIRS:
            shutil.rmtree(self._dirs.popleft(), ignore_errors=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def build_app(
    handler: DemoHandler, *, examples: Sequence[str | Path] = (), title: str = "vlpart demo"
) -> tuple[gr.Blocks, _RequestFiles]:
    """The page: inputs on the left, overlay, status, instance table and downloads on the right.

    One long function on purpose: Gradio declares a page as nested ``with`` blocks, and the
    layout reads best top to bottom in one place (the request logic is in :class:`DemoHandler`).

    Returns:
        The Gradio app (queued: ``handler.limits.concurrency`` runs at a time, at most
        ``queue_size`` waiting) and the folder holder its downloads are written to.
    """
    gr = _import_gradio()
    files = _RequestFiles()
    limits = handler.limits

    def respond(image, vocabulary, granularity, threshold, template):
        # The event skips Gradio's preprocessing: the image arrives as the upload's file data
        # (in Gradio's upload folder, checked by Gradio), undecoded, so that the one image
        # reader applies the pixel limit and a broken file gets vlpart's message.
        path = image.get("path") if isinstance(image, dict) else None
        result = handler(path, vocabulary, granularity, threshold, template)
        if not result.ok:
            return None, [], None, None, f"Error: {result.message}"
        json_path, png_path = write_downloads(result, files.new_dir())
        return result.overlay, result.rows, str(json_path), str(png_path), result.message

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=CACHE_SWEEP) as app:
        gr.Markdown(
            "## vlpart: open-vocabulary part segmentation\n"
            "Upload or paste an image, type what to find (`dog`, `dog:head,torso,leg,tail`, "
            "`dog:*`, `pascal_part`; entries separated by `;`) and press **Segment**."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    type="filepath",
                    label="Image",
                    sources=["upload", "clipboard"],
                    buttons=["fullscreen"],
                    height=320,
                    elem_id="image",
                )
                vocabulary = gr.Textbox(
                    value=DEFAULT_VOCABULARY,
                    label="Vocabulary",
                    info="objects (dog, cat), parts (dog:head,leg), every known part (dog:*) "
                    "or a built-in taxonomy (pascal_part, partimagenet, paco, voc, coco, lvis)",
                    max_length=MAX_VOCAB_CHARS,
                    elem_id="vocabulary",
                )
                granularity = gr.Radio(
                    GRANULARITY_CHOICES,
                    value=AS_TYPED,
                    label="Granularity",
                    info="use the vocabulary as typed, or only its objects, its objects and the "
                    "parts it names, or its objects and every part a taxonomy knows of them",
                    elem_id="granularity",
                )
                threshold = gr.Slider(
                    0.0,
                    1.0,
                    value=SCORE_THRESH,
                    step=0.01,
                    label="Score threshold",
                    elem_id="threshold",
                )
                template = gr.Dropdown(
                    TEMPLATE_CHOICES,
                    value=DEFAULT_TEMPLATE,
                    label="Part prompt template",
                    allow_custom_value=True,
                    info="or a string with {object} and {part}",
                    elem_id="template",
                )
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[image], label="Examples")
            with gr.Column():
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                overlay = gr.Image(
                    label="Overlay",
                    type="numpy",
                    format="png",
                    interactive=False,
                    buttons=["fullscreen"],
                    height=440,
                    elem_id="overlay",
                )
                table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    label="Instances",
                    interactive=False,
                    wrap=True,
                    elem_id="instances",
                )
                with gr.Row():
                    results_file = gr.File(
                        label="COCO results (JSON)", interactive=False, elem_id="results-json"
                    )
                    overlay_file = gr.File(
                        label="Overlay (PNG)", interactive=False, elem_id="overlay-png"
                    )
        submit.click(
            respond,
            inputs=[image, vocabulary, granularity, threshold, template],
            outputs=[overlay, table, results_file, overlay_file, status],
            concurrency_limit=limits.concurrency,
            preprocess=False,
            api_name="segment",
        )
    app.queue(
        max_size=limits.queue_size, default_concurrency_limit=limits.concurrency, api_open=False
    )
    return app, files


def find_examples(folder: str | Path) -> list[Path]:
    """Up to :data:`MAX_EXAMPLES` ``.jpg``/``.png`` images of ``folder`` (sorted); none when
    the folder does not exist."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return found[:MAX_EXAMPLES]


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: stop like Ctrl-C does."""
    raise KeyboardInterrupt


def serve(
    handler: DemoHandler,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    examples: Sequence[str | Path] = (),
) -> None:
    """Serve the page on ``host:port`` until interrupted (Ctrl-C, or SIGTERM in the main
    thread); either way the server closes and the download folder is removed.

    Raises:
        OSError: the port cannot be bound.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    app, files = build_app(handler, examples=examples)
    limits = handler.limits
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    try:
        _, url, _ = app.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            max_file_size=int(limits.max_upload_mb * 1024 * 1024),
            allowed_paths=[str(p) for p in examples],
            prevent_thread_lock=True,
            quiet=True,
            show_error=False,
            ssr_mode=False,
            mcp_server=False,
            footer_links=["settings"],
            enable_monitoring=False,
        )
        print(f"vlpart demo: open {url} (Ctrl-C to stop)", flush=True)
        app.block_thread()
    finally:
        app.close()
        files.close()
