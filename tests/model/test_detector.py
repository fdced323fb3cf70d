"""Tiny detectors: inference outputs, training gradients per data kind, vocabulary swaps."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vlpart.model import CLS_TEMPERATURE, DataKind, TextClassifier

TEXT_DIM = 32


def _check_detections(out, sizes):
    assert len(out) == len(sizes)
    for det, (h, w) in zip(out, sizes, strict=True):
        n = len(det["boxes"])
        assert det["boxes"].shape == (n, 4) and det["boxes"].dtype == torch.float32
        assert det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert det["labels"].dtype == torch.int64
        assert det["masks"].shape == (n, 1, h, w) and det["masks"].dtype == torch.float32
        if n:
            assert det["boxes"][:, 2].max() <= w and det["boxes"][:, 3].max() <= h
            assert ((det["scores"] >= 0) & (det["scores"] <= 1)).all()
            assert ((det["masks"] >= 0) & (det["masks"] <= 1)).all()


def _trainable_without_grad(model):
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize(
    ("backbone", "cascade"),
    [("resnet50", False), ("efficientnet_lite0", False), ("resnet50", True)],
)
def test_inference_outputs(tiny_models, backbone, cascade):
    model = tiny_models(backbone, cascade)
    images = [torch.rand(3, 70, 100), (torch.rand(3, 120, 90) * 255).to(torch.uint8)]
    with torch.inference_mode():
        out = model(images)
    _check_detections(out, [(70, 100), (120, 90)])
    assert len(out[0]["boxes"]) == 10  # score_thresh 0 keeps detections_per_image
    assert out[0]["labels"].max() < 5


def test_empty_result_has_shaped_empties(tiny_models):
    model = copy.deepcopy(tiny_models())
    model.roi_heads.score_thresh = 1.0
    with torch.inference_mode():
        out = model([torch.rand(3, 64, 64)])
    _check_detections(out, [(64, 64)])
    assert len(out[0]["boxes"]) == 0


@pytest.mark.parametrize(
    ("backbone", "cascade"),
    [("resnet50", False), ("efficientnet_lite0", False), ("resnet50", True)],
)
@pytest.mark.parametrize("kind", [DataKind.PART, DataKind.OBJECT])
def test_every_parameter_gets_a_gradient(tiny_models, part_batch, backbone, cascade, kind):
    model = copy.deepcopy(tiny_models(backbone, cascade)).train()
    images, targets = part_batch
    losses = model(images, targets, kind=kind)
    assert set(losses) == {
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_cls",
        "loss_box_reg",
        "loss_mask",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert _trainable_without_grad(model) == []
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if backbone == "resnet50":
        assert frozen and all(
            n.startswith("backbone.body.conv1") or n.startswith("backbone.body.layer1")
            for n in frozen
        )


@pytest.mark.parametrize("cascade", [False, True])
def test_image_batches_train_only_the_documented_subset(tiny_models, cascade):
    model = copy.deepcopy(tiny_models("resnet50", cascade)).train()
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 100)]
    targets = [{"image_labels": torch.tensor([2])}, {"image_labels": torch.tensor([0, 4])}]
    losses = model(images, targets, kind=DataKind.IMAGE)
    assert set(losses) == {"loss_image"} and torch.isfinite(losses["loss_image"])
    losses["loss_image"].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert not any(
        n.startswith(("rpn.", "roi_heads.mask_")) or ".bbox_pred." in n for n in with_grad
    )
    assert any(n.startswith("roi_heads.box_head.") for n in with_grad)
    assert any(".cls_score.linear." in n for n in with_grad)
    assert any(n.startswith("backbone.body.") for n in with_grad)


def test_parsed_batches_train_classification_only(tiny_models, part_batch):
    model = copy.deepcopy(tiny_models()).train()
    images, targets = part_batch
    targets = [{k: t[k] for k in ("boxes", "labels")} for t in targets]
    losses = model(images, targets, kind=DataKind.PARSED)
    assert set(losses) == {"loss_cls"}
    losses["loss_cls"].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert not any(
        n.startswith(("rpn.", "roi_heads.mask_")) or ".bbox_pred." in n for n in with_grad
    )
    assert any(".cls_score.linear." in n for n in with_grad)


def test_empty_targets_give_finite_losses_that_backpropagate(tiny_models):
    model = copy.deepcopy(tiny_models()).train()
    images = [torch.rand(3, 64, 64)]
    targets = [
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 64, 64, dtype=torch.uint8),
        }
    ]
    losses = model(images, targets, kind=DataKind.PART)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    assert all(v.requires_grad for v in losses.values())
    sum(losses.values()).backward()


def test_missing_target_keys_are_reported(tiny_models, part_batch):
    model = copy.deepcopy(tiny_models()).train()
    images, targets = part_batch
    with pytest.raises(ValueError, match="missing masks"):
        model(images, [{k: t[k] for k in ("boxes", "labels")} for t in targets])


def test_text_classifier_formula():
    clf = TextClassifier(6, 4)
    x = torch.randn(3, 6)
    emb = torch.randn(2, 4) * 7
    logits = clf(x, emb)
    expected = (
        CLS_TEMPERATURE
        * F.normalize(x @ clf.linear.weight.t() + clf.linear.bias, dim=1)
        @ F.normalize(emb, dim=1).t()
    )
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits[:, :2], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(logits[:, 2], torch.zeros(3))
    with pytest.raises(ValueError, match="no vocabulary"):
        clf(x)
    clf.set_vocabulary(emb)
    torch.testing.assert_close(clf(x), logits)
    with pytest.raises(ValueError, match=r"shape \[C, 4\]"):
        clf.set_vocabulary(torch.randn(2, 5))
    assert "text_embeddings" not in clf.state_dict()


def test_vocabulary_swap_changes_label_space_without_retraining(tiny_models):
    model = copy.deepcopy(tiny_models())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    image = [torch.rand(3, 96, 96)]
    model.set_vocabulary(torch.randn(3, TEXT_DIM))
    with torch.inference_mode():
        small = model(image)[0]
        large = model(image, text_embeddings=torch.randn(40, TEXT_DIM))[0]
    assert small["labels"].max() < 3
    assert large["labels"].max() >= 3  # 10 detections over 40 classes
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_test_scores_follow_the_formula(tiny_models):
    model = tiny_models()
    heads = model.roi_heads
    feats = {f"p{i}": torch.randn(1, 32, 64 // 2**i, 64 // 2**i) for i in range(2, 7)}
    proposals = [torch.tensor([[0.0, 0.0, 20.0, 30.0], [10.0, 5.0, 40.0, 50.0]])]
    objectness = [torch.tensor([0.9, 0.2])]
    emb = torch.randn(4, TEXT_DIM)
    with torch.inference_mode():
        _, scores = heads._predict_boxes(
            list(feats.values())[:4], proposals, [(64, 64)], objectness, emb
        )
        pooled = heads.box_roi_pool(list(feats.values())[:4], proposals)
        logits = heads.box_predictor.cls_score(heads.box_head(pooled), emb)
    expected = (logits[:, :4].sigmoid() * objectness[0][:, None]).sqrt()
    torch.testing.assert_close(scores[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_swin_b_forward_and_backward(tiny_config, part_batch):
    from vlpart.model import build_model

    model = build_model(tiny_config(backbone="swin_b"))
    model.set_vocabulary(torch.randn(5, TEXT_DIM))
    images, targets = part_batch
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    assert _trainable_without_grad(model) == []
    with torch.inference_mode():
        out = model.eval()([torch.rand(3, 64, 64)])
    _check_detections(out, [(64, 64)])


def test_repeated_boxes_go_through_the_mask_head_once(tiny_models):
    heads = tiny_models().roi_heads
    gen = torch.Generator().manual_seed(0)
    channels = heads.mask_head[0][0].in_channels
    maps = [torch.randn(2, channels, 32 >> i, 48 >> i, generator=gen) for i in range(4)]
    distinct = torch.tensor([[4.0, 4.0, 60.0, 50.0], [10, 20, 90, 100], [0, 0, 30, 30]])
    # Image 0 repeats its first box three times (one proposal kept for three classes); image 1
    # shares a box with image 0, which must not be merged across images.
    boxes = [distinct[[0, 1, 0, 2, 0]], distinct[[0, 2]]]
    batches = []
    hook = heads.mask_head.register_forward_hook(lambda m, a, o: batches.append(len(a[0])))
    try:
        with torch.inference_mode():
            probs = heads._mask_probabilities(maps, boxes)
            every = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(maps, boxes)))
    finally:
        hook.remove()
    assert batches == [3 + 2, 7]
    assert probs.shape == (7, 1, 28, 28)
    torch.testing.assert_close(probs, every.sigmoid(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(probs[0], probs[5])  # the same box in the other image
