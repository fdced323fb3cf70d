"""Losses against hand-computed values, and the data-kind table."""

from __future__ import annotations

import math

import pytest
import torch

from vlpart.model.losses import (
    LOSS_WEIGHTS,
    DataKind,
    box_regression_loss,
    federated_class_mask,
    federated_class_weights,
    image_label_loss,
    mask_loss,
    sigmoid_classification_loss,
)

LN2 = math.log(2.0)


def test_sigmoid_classification_loss_by_hand():
    # C = 2 classes + background column; row 0 is class 0, row 1 is background.
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    # row 0: BCE(0, 1) + BCE(0, 0) = 2 ln2; row 1: BCE(ln3, 0) + BCE(0, 0) = ln4 + ln2.
    expected = (2 * LN2 + 3 * LN2) / 2
    torch.testing.assert_close(sigmoid_classification_loss(logits, labels), torch.tensor(expected))
    masked = sigmoid_classification_loss(logits, labels, class_mask=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(masked, torch.tensor((LN2 + 2 * LN2) / 2))


def test_background_column_is_ignored():
    logits = torch.tensor([[0.0, 0.0, 100.0]])
    assert sigmoid_classification_loss(logits, torch.tensor([2])).item() == pytest.approx(2 * LN2)


def test_federated_classes_keep_gt_and_sample_by_weight():
    counts = torch.tensor([4.0, 9.0, 0.0, 16.0, 0.0, 0.0])
    torch.testing.assert_close(
        federated_class_weights(counts), torch.tensor([2.0, 3.0, 0.0, 4.0, 0.0, 0.0])
    )
    weights = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 5.0])
    labels = torch.tensor([1, 3, 6, 6])  # 6 = background
    mask = federated_class_mask(labels, weights, num_sampled=3)
    # GT classes 1 and 3 always; one more drawn: only class 5 has weight left.
    assert mask.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    # Never more classes than there are with weight, and GT kept beyond num_sampled.
    many = federated_class_mask(torch.tensor([0, 2, 4]), weights, num_sampled=2)
    assert many.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_box_regression_loss_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]])
    target = torch.zeros(2, 4)
    loss = box_regression_loss(pred, target, torch.tensor([True, False]))
    assert loss.item() == pytest.approx((1 + 2 + 3 + 4) / 2)


def test_mask_loss_by_hand():
    logits = torch.zeros(3, 1, 4, 4)
    assert mask_loss(logits, torch.ones(3, 4, 4)).item() == pytest.approx(LN2)
    logits[0, 0, 0, 0] = 2.0
    targets = torch.zeros(3, 4, 4)
    expected = (47 * LN2 + math.log1p(math.exp(2.0))) / 48
    assert mask_loss(logits, targets).item() == pytest.approx(expected)


def test_image_label_loss_max_size_and_max_score():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.0]])
    boxes = torch.tensor([[0.0, 0.0, 10, 10], [0.0, 0.0, 20, 20]])
    # max_size picks the larger box (row 1): BCE(2, 1) + BCE(-1, 0).
    expected = math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))
    got = image_label_loss(logits, boxes, torch.tensor([0]), mode="max_size")
    assert got.item() == pytest.approx(expected)
    # max_score for label 1 picks row 0 (logit 0 > -1): BCE(0, 0) + BCE(0, 1).
    got = image_label_loss(logits, boxes, torch.tensor([1]), mode="max_score")
    assert got.item() == pytest.approx(2 * LN2)
    # Two labels are averaged.
    both = image_label_loss(logits, boxes, torch.tensor([0, 1]), mode="max_size")
    second = math.log1p(math.exp(2.0)) + math.log1p(math.exp(1.0))  # row 1 vs target [0, 1]
    assert both.item() == pytest.approx((expected + second) / 2)


def test_empty_inputs_give_zero_connected_losses():
    logits = torch.zeros(0, 4, requires_grad=True)
    losses = [
        sigmoid_classification_loss(logits, torch.zeros(0, dtype=torch.int64)),
        box_regression_loss(
            torch.zeros(0, 4, requires_grad=True),
            torch.zeros(0, 4),
            torch.zeros(0, dtype=torch.bool),
        ),
        mask_loss(torch.zeros(0, 1, 28, 28, requires_grad=True), torch.zeros(0, 28, 28)),
        image_label_loss(
            torch.zeros(3, 4, requires_grad=True),
            torch.rand(3, 4),
            torch.zeros(0, dtype=torch.int64),
        ),
    ]
    for loss in losses:
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()


def test_loss_table():
    assert set(LOSS_WEIGHTS) == set(DataKind)
    assert LOSS_WEIGHTS[DataKind.IMAGE] == {"loss_image": 0.1}
    assert LOSS_WEIGHTS[DataKind.PARSED] == {"loss_cls": 0.1}
    assert LOSS_WEIGHTS[DataKind.PART] == LOSS_WEIGHTS[DataKind.OBJECT]
    assert set(LOSS_WEIGHTS[DataKind.PART]) == {
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_cls",
        "loss_box_reg",
        "loss_mask",
    }
    with pytest.raises(TypeError):
        LOSS_WEIGHTS[DataKind.IMAGE]["loss_mask"] = 1.0  # read-only
