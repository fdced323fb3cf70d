"""Images per second of ``vlpart predict`` over a folder: decode, segment, encode the results,
render and write the overlays (:func:`vlpart.inference.files.predict_files`, what the CLI runs),
sequential against pipelined (:mod:`vlpart.inference.pipeline`), with the outputs compared byte
for byte.

The folder holds ``--num-images`` copies of the Pascal-Part example photos (~500×375 JPEGs,
cycled); the model is a random-init R50 detector with the released checkpoints' settings (800 px,
1000 proposals, 100 detections; seed 0, so every run builds the same one) and the Pascal-Part
vocabulary's released CLIP RN50 embeddings. ``--score-thresh`` is the predict threshold (random
weights score about 0.5 for every class, so the default 0.3 keeps all 100 detections per image
and every class's NMS sees all 1000 boxes: the slow case for NMS, encoding and drawing).
``--weights`` runs a trained model file instead, e.g. a quickstart's (128 px, a fraction of the
R50's time: the case where decoding and writing are a large share of an image's time).

Each run is its own process over the whole folder, one after another in this one invocation
(compare the runs of one invocation only: the machine may be loaded): for each ``--writers``
value (0: encode and write in the main thread, the sequential path; N: N writer threads) with
``--workers`` decoding processes, and with ``--before-src`` first the same folder through
another vlpart source tree (e.g. the commit before the pipeline) as the baseline. Every run's
output folder must equal the first run's byte for byte (``identical`` in the JSON). The runs of
this tree with writer threads wait for OpenMP work passively, as ``vlpart predict`` sets it
(``OMP_WAIT_POLICY``, unless the environment sets it: export ``OMP_WAIT_POLICY=ACTIVE`` to
measure spinning waits); the ``--writers 0`` and ``--before-src`` runs keep the environment as it
is, as ``vlpart predict --writers 0`` and the older ``vlpart predict`` do. Each run records
``model_seconds``, its time inside :meth:`PartSegmenter.predict`; ``pipeline_bound_vs_writers_0``
is the sequential run's seconds over its model seconds: the most that overlapping the decoding and
writing with the model can give on this machine with this model. Prints JSON.

    flock /tmp/cpu.lock python benchmarks/predict_throughput.py --threads 2 \\
        --before-src /path/to/old/vlpart/src --writers 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
DATA = Path(__file__).resolve().parents[2] / "shared/data"
PHOTOS = DATA / "pascal_part_examples"
EMBEDDINGS = DATA / "vlpart_metadata/pascal_part_clip_RN50_a+cname.npy"


def worker(args: argparse.Namespace) -> dict:
    """One run over ``args.folder`` into ``args.out``, in this process."""
    import numpy as np
    import torch

    from vlpart.core.config import ModelConfig
    from vlpart.core.vocab import parse_vocabulary
    from vlpart.inference.files import expand_inputs, predict_files
    from vlpart.inference.segmenter import PartSegmenter
    from vlpart.model import build_model
    from vlpart.text.precomputed import PrecomputedTextEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = parse_vocabulary("pascal_part")
    if args.weights is None:
        encoder = PrecomputedTextEncoder(torch.from_numpy(np.load(EMBEDDINGS)), vocab.prompts())
        model = build_model(ModelConfig(backbone_weights=None))
        segmenter = PartSegmenter(model, encoder, precision=args.precision)
    else:
        segmenter = PartSegmenter.from_pretrained(args.weights, precision=args.precision)
    segmenter.predict(np.zeros((64, 64, 3), np.uint8), vocabulary=vocab)  # warm-up
    model_seconds = [0.0]
    predict = segmenter.predict

    def timed_predict(*predict_args, **predict_kwargs):
        started = time.perf_counter()
        try:
            return predict(*predict_args, **predict_kwargs)
        finally:
            model_seconds[0] += time.perf_counter() - started

    segmenter.predict = timed_predict  # what predict_files calls, in this tree and older ones
    paths, _ = expand_inputs([str(args.folder)])
    extra = {} if args.writers is None else {"writers": args.writers}
    start = time.perf_counter()
    summary = predict_files(
        segmenter,
        paths,
        vocabulary=vocab,
        out_dir=args.out,
        score_threshold=args.score_thresh,
        num_workers=args.workers,
        **extra,
    )
    seconds = time.perf_counter() - start
    return {
        "images": len(summary.processed),
        "instances_per_image": round(summary.num_instances / len(paths), 1),
        "seconds": round(seconds, 2),
        "model_seconds": round(model_seconds[0], 2),
        "images_per_second": round(len(summary.processed) / seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _run(src: Path, folder: Path, out: Path, args: argparse.Namespace, writers: int | None) -> dict:
    from vlpart.apps.cli import waits_passively  # here: a worker may run an older tree

    cmd = [sys.executable, __file__, "--worker", "--folder", str(folder), "--out", str(out)]
    cmd += ["--threads", str(args.threads), "--workers", str(args.workers)]
    cmd += ["--score-thresh", str(args.score_thresh), "--precision", args.precision]
    if args.weights is not None:
        cmd += ["--weights", str(args.weights)]
    if writers is not None:
        cmd += ["--writers", str(writers)]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads)}
    # Runs of this tree name their writers; the --before-src baseline (None) keeps the environment.
    if writers is not None and waits_passively("predict", writers):
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `vlpart predict` sets it
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({src}, writers {writers}):\n{done.stderr[-2000:]}")
    return {
        **json.loads(done.stdout.strip().splitlines()[-1]),
        "omp_wait_policy": env.get("OMP_WAIT_POLICY", "unset"),
    }


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument(
        "--writers", type=int, nargs="+", help="writer threads of each run (default 0 1)"
    )
    parser.add_argument("--before-src", type=Path, help="another vlpart src tree: the baseline")
    parser.add_argument("--score-thresh", type=float, default=0.3, help="(SCORE_THRESH)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument(
        "--weights",
        type=Path,
        help="a trained model file (e.g. a quickstart's model.safetensors, its own text encoder) "
        "instead of the random-init R50",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.writers = args.writers[0] if args.writers else None
        print(json.dumps(worker(args)))
        return
    photos = sorted(PHOTOS.glob("*.jpg"))
    if not photos or not EMBEDDINGS.is_file():
        raise SystemExit(f"needs the shared data: {PHOTOS} and {EMBEDDINGS}")
    plan = [("before", args.before_src, None)] if args.before_src else []
    plan += [(f"writers_{w}", REPO_SRC, w) for w in args.writers or [0, 1]]
    runs, reference = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i in range(args.num_images):
            photo = photos[i % len(photos)]
            shutil.copyfile(photo, folder / f"{i:04d}_{photo.name}")
        for name, src, writers in plan:
            out = Path(tmp) / name
            runs[name] = _run(src, folder, out, args, writers)
            files = _files(out)
            # The outputs name the input files: the same folder for every run.
            reference = files if reference is None else reference
            runs[name]["identical"] = files == reference
            shutil.rmtree(out)
    base = runs[plan[0][0]]["seconds"]
    report = {
        "threads": args.threads,
        "workers": args.workers,
        "precision": args.precision,
        "score_thresh": args.score_thresh,
        "num_images": args.num_images,
        "model": str(args.weights) if args.weights else "R50-FPN random init, released settings",
        "runs": runs,
        "speedup_vs_first": {k: round(base / v["seconds"], 3) for k, v in runs.items()},
    }
    if "writers_0" in runs:  # overlap hides at most what is not the model
        sequential = runs["writers_0"]
        report["pipeline_bound_vs_writers_0"] = round(
            sequential["seconds"] / sequential["model_seconds"], 3
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
