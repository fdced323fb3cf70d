"""The whole path learns on real data: Pascal-Part photos, real CLIP part embeddings."""

import importlib.util
from pathlib import Path

import pytest
import torch

from vlpart.data.pascal_part import convert_pascal_part
from vlpart.training.train import train

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "overfit_pascal_part.py"
# Measured with benchmarks/overfit_pascal_part.py (seed 0, 512 px, 2 threads): mask AP50 0.06 /
# 0.20 / 0.34 / 0.52 after 50 / 100 / 150 / 200 iterations, ~2.8 s per iteration.
ITERATIONS = 180
MIN_MASK_AP50 = 0.3


def _benchmark():
    spec = importlib.util.spec_from_file_location("overfit_pascal_part", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_training_on_real_pascal_part_photos_raises_mask_ap50(shared_data, tmp_path):
    bench = _benchmark()
    examples = shared_data / "pascal_part_examples"
    parts = tmp_path / "parts.json"
    convert_pascal_part(examples, examples, parts)
    embeddings = shared_data / bench.EMBEDDINGS
    cfg = bench.overfit_config(parts, examples, embeddings, size=512, max_iter=ITERATIONS)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weights = train(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert bench.mask_ap50(weights, parts, examples, embeddings) > MIN_MASK_AP50
