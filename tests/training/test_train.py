import copy
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vlpart.core.config import TrainConfig
from vlpart.model import build_model, load_checkpoint
from vlpart.training.sources import build_sources
from vlpart.training.train import lr_factor, train


def test_lr_factor_warmup_and_steps():
    cfg = TrainConfig(warmup_iters=10, warmup_factor=0.1, lr_steps=[20, 30], lr_gamma=0.5)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.55)
    assert lr_factor(10, cfg) == 1.0
    assert lr_factor(19, cfg) == 1.0
    assert lr_factor(20, cfg) == 0.5
    assert lr_factor(35, cfg) == 0.25


def test_sources_have_own_vocabularies_and_embeddings(tiny_train_config):
    sources = build_sources(tiny_train_config)
    assert [s.kind.value for s in sources] == ["part", "object", "image"]
    parts, objects, labels = sources
    assert all(":" in n for n in parts.dataset.vocabulary.names)
    assert not any(":" in n for n in objects.dataset.vocabulary.names)
    assert "dog:head" not in parts.dataset.vocabulary  # novel parts stay out of training
    for s in sources:
        assert s.text_embeddings.shape == (len(s.dataset.vocabulary), 384)
        torch.testing.assert_close(
            s.text_embeddings.norm(dim=1), torch.ones(len(s.dataset.vocabulary))
        )


def test_text_dim_mismatch_is_an_error(tiny_train_config):
    tiny_train_config.model.text_dim = 1024
    with pytest.raises(ValueError, match="384-d .* model.text_dim is 1024"):
        build_sources(tiny_train_config)


def test_train_writes_checkpoint_metrics_and_losses_by_kind(tiny_train_config, tmp_path):
    weights = train(tiny_train_config, tmp_path)
    assert weights == tmp_path / "model.safetensors"
    model, info = load_checkpoint(weights)
    assert info.text_encoder == "minilm:all-MiniLM-L6-v2"
    names = [c["name"] for c in info.vocabulary]
    assert names[0].count(":") == 1 and "dog" in names  # parts first, then objects
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == list(range(1, 7))
    for r in records:
        assert all(torch.isfinite(torch.tensor(v)) for k, v in r.items() if k.startswith("loss"))
        losses = {k for k in r if k.startswith("loss_")}
        if r["source"] == "labels":
            assert losses == {"loss_image"}
        else:
            assert losses == {
                "loss_objectness",
                "loss_rpn_box_reg",
                "loss_cls",
                "loss_box_reg",
                "loss_mask",
            }
    assert {r["source"] for r in records} >= {"parts", "objects"}
    state = torch.load(tmp_path / "ckpt-000006" / "train_state.pt", weights_only=True)
    assert state["iteration"] == 6
    # keep_checkpoints: 2 -> the checkpoints of iterations 3 and 6; the pointer names the newest
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-000003", "ckpt-000006"]
    assert (tmp_path / "latest").read_text().strip() == "ckpt-000006"
    exported = load_file(tmp_path / "model.safetensors")
    final = load_file(tmp_path / "ckpt-000006" / "model.safetensors")
    assert all(torch.equal(exported[k], final[k]) for k in final)


def test_interrupt_then_resume_equals_uninterrupted(tiny_train_config, tmp_path):
    full = tmp_path / "full"
    train(tiny_train_config, full)

    def interrupt(iteration, losses):
        if iteration == 4:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_train_config, part, on_step=interrupt)
    assert torch.load(part / "ckpt-000004" / "train_state.pt", weights_only=True)["iteration"] == 4
    train(tiny_train_config, part, resume=True)
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    iterations = [
        json.loads(line)["iteration"] for line in (part / "metrics.jsonl").read_text().splitlines()
    ]
    assert iterations == [1, 2, 3, 4, 5, 6]


def test_resume_without_state_is_a_clear_error(tiny_train_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(tiny_train_config, tmp_path, resume=True)


def test_a_failed_start_leaves_no_run_folder(tiny_train_config, tmp_path):
    bad_data = copy.deepcopy(tiny_train_config)
    bad_data.data[1].ann_file = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        train(bad_data, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        train(tiny_train_config, tmp_path / "run2", init_weights=tmp_path / "weights.safetensors")
    assert not (tmp_path / "run2").exists()


def test_no_data_sources(tiny_train_config, tmp_path):
    tiny_train_config.data = []
    with pytest.raises(ValueError, match="lists no training data"):
        train(tiny_train_config, tmp_path)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process_on_the_concatenated_batch(
    tiny_train_config, tmp_path
):
    """2-rank gloo DDP (2 images per rank) ends with the weights of one process trained on the
    4-image global batches. Image-label batches: their loss (mean over images of the BCE of the
    largest proposal) involves no random sampling, so the two runs compute the same function."""
    cfg = tiny_train_config
    cfg.data = [s for s in cfg.data if s.kind == "image"]
    cfg.train.max_iter = 3
    cfg.train.checkpoint_period = 100
    cfg_path = tmp_path / "ddp.yaml"
    cfg.to_yaml(cfg_path)
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            "29517",
            "-m",
            "vlpart.apps.cli",
            "train",
            str(cfg_path),
            "--out",
            str(out),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "ckpt-000003",
        "latest",
        "metrics.jsonl",
        "model.json",
        "model.safetensors",
    ]
    state = torch.load(out / "ckpt-000003" / "train_state.pt", weights_only=True)
    assert state["iteration"] == 3 and len(state["rng"]) == 2

    cfg.data[0].batch_size = 4  # the global batch of the two ranks, in the same order
    single = train(cfg, tmp_path / "single")
    cfg.data[0].batch_size = 2  # one rank's half alone: what DDP without averaging would give
    half = train(cfg, tmp_path / "half")
    ddp_weights = load_file(out / "model.safetensors")
    single_weights = load_file(single)
    half_weights = load_file(half)
    torch.manual_seed(cfg.train.seed)  # as train() does before building the model
    init = build_model(cfg).state_dict()
    moved = [k for k in ddp_weights if not torch.equal(ddp_weights[k], init[k])]
    assert len(moved) > 10  # the image loss trained the classifier, box head, FPN and trunk
    for key, value in ddp_weights.items():
        torch.testing.assert_close(value, single_weights[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(
        not torch.allclose(ddp_weights[k], half_weights[k], rtol=1e-4, atol=1e-5) for k in moved
    )


def test_bfloat16_autocast_on_cpu_trains(tiny_train_config, tmp_path):
    tiny_train_config.train.amp = True
    tiny_train_config.train.max_iter = 3
    train(tiny_train_config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    weights = load_file(tmp_path / "model.safetensors")
    assert all(v.dtype != torch.bfloat16 for v in weights.values())  # master weights stay fp32
