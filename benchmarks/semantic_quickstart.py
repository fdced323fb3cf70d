"""The OV-PARTS table (seen / unseen mIoU, h-IoU) of a ``vlpart quickstart`` model on its own
synthetic world: the held-out images' part annotations become label maps (``parts_val.json`` ->
``gt/``, ``objects_val.json`` -> ``objects/``), the world's novel objects (dog, bus) are the
unseen classes, and the model is scored in both settings: Oracle-Obj (told each pixel's object, as
OV-PARTS tells its models) and whole image; plus the whole-image maps cut to the objects by the
evaluator alone. Prints JSON; writes the maps, the predictions and the metrics under ``--out``.

    vlpart quickstart --out quickstart        # the model (about 10 minutes on 2 cores)
    python benchmarks/semantic_quickstart.py --quickstart quickstart --out semantic_quickstart
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vlpart.data.ov_parts import coco_to_label_maps, read_object_names
from vlpart.evaluation.model_eval import evaluate_semantic_model
from vlpart.evaluation.semantic import evaluate_label_maps
from vlpart.inference.segmenter import SCORE_THRESH, PartSegmenter


def _row(scores) -> dict:
    keys = ("mIoU_seen", "mIoU_unseen", "hIoU", "mIoU", "coverage")
    data = scores.to_json()
    return {k: None if data[k] is None else round(data[k], 2) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quickstart", type=Path, default=Path("quickstart"))
    parser.add_argument("--out", type=Path, default=Path("semantic_quickstart"))
    parser.add_argument("--score-thresh", type=float, default=SCORE_THRESH)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = args.quickstart / "world"
    maps, vocab = coco_to_label_maps(
        world / "parts_val.json", args.out / "maps", objects_json=world / "objects_val.json"
    )
    segmenter = PartSegmenter.from_pretrained(args.quickstart / "model.safetensors")
    start = time.perf_counter()
    oracle = evaluate_semantic_model(
        segmenter,
        maps.gt_dir,
        world / "images",
        vocab,
        object_dir=maps.objects_dir,
        object_names=read_object_names(maps.objects_dir, vocab),
        score_thresh=args.score_thresh,
        pred_dir=args.out / "pred_oracle",
        progress=False,
    )
    seconds = time.perf_counter() - start
    whole = evaluate_semantic_model(
        segmenter,
        maps.gt_dir,
        world / "images",
        vocab,
        score_thresh=args.score_thresh,
        pred_dir=args.out / "pred",
        progress=False,
    )
    # The whole-image maps cut to the objects by the evaluator alone (OV-PARTS rule 2).
    cut = evaluate_label_maps(
        maps.gt_dir, args.out / "pred", vocab, object_dir=maps.objects_dir, progress=False
    )
    oracle.save(args.out / "oracle_obj")
    whole.save(args.out / "whole_image")
    print(
        json.dumps(
            {
                "model": str(args.quickstart / "model.safetensors"),
                "images": maps.num_images,
                "classes": len(vocab),
                "unseen_classes": sum(c.split != "base" for c in vocab),
                "score_thresh": args.score_thresh,
                "Oracle-Obj": _row(oracle),
                "whole image": _row(whole),
                "whole image maps, cut to the objects": _row(cut),
                "oracle_predict_and_eval_seconds": round(seconds, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
