"""The open-vocabulary box classifier: region features scored against text embeddings."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vlpart.core.errors import InputError

__all__ = ["CLS_TEMPERATURE", "TextBoxPredictor", "TextClassifier"]

# VLPart / Detic zero-shot classifier: cosine similarity scaled by 50 (NORM_TEMP).
CLS_TEMPERATURE = 50.0
# detectron2 FastRCNNOutputLayers: box regressor initialised with std 0.001.
BOX_PRED_INIT_STD = 0.001


class TextClassifier(nn.Module):
    """``logits = T · normalize(W·x) · normalize(E)ᵀ`` plus a background column fixed at 0.

    The vocabulary ``E`` is not a weight: it is set with :meth:`set_vocabulary` (kept as a
    non-persistent buffer, so checkpoints stay vocabulary-free) or passed per call.

    Args:
        in_features: width of the region features.
        text_dim: width D of the text embeddings.
        temperature: the scale T.
    """

    def __init__(
        self, in_features: int, text_dim: int, *, temperature: float = CLS_TEMPERATURE
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, text_dim)
        self.temperature = temperature
        self.text_dim = text_dim
        self.register_buffer(
            "text_embeddings", self.linear.weight.new_zeros((0, text_dim)), persistent=False
        )

    def check_embeddings(self, text_embeddings: Tensor) -> None:
        """Raise ``ValueError`` unless ``text_embeddings`` is a non-empty ``[C, D]`` matrix."""
        if text_embeddings.ndim != 2 or text_embeddings.shape[1] != self.text_dim:
            raise InputError(
                f"text embeddings must have shape [C, {self.text_dim}], got "
                f"{list(text_embeddings.shape)}; encode the vocabulary with the text encoder the "
                "model was trained with"
            )
        if text_embeddings.shape[0] == 0:
            raise InputError("the vocabulary is empty: give at least one category")

    def set_vocabulary(self, text_embeddings: Tensor) -> None:
        """Use ``text_embeddings`` (Tensor[C, D], any norm) as the default vocabulary."""
        self.check_embeddings(text_embeddings)
        self.text_embeddings = F.normalize(text_embeddings.detach().to(self.linear.weight), dim=1)

    def forward(self, x: Tensor, text_embeddings: Tensor | None = None) -> Tensor:
        """Score region features.

        Args:
            x (Tensor[R, in_features]): region features.
            text_embeddings (Tensor[C, D] | None): vocabulary for this call; default the one
                set by :meth:`set_vocabulary`.

        Returns:
            Tensor[R, C + 1]: class logits; the last column (background) is 0.
        """
        if text_embeddings is None:
            if self.text_embeddings.shape[0] == 0:
                raise InputError(
                    "no vocabulary: call model.set_vocabulary(text_embeddings) or pass "
                    "text_embeddings=..."
                )
            text_embeddings = self.text_embeddings
        else:
            self.check_embeddings(text_embeddings)
            text_embeddings = F.normalize(text_embeddings.to(x), dim=1)
        classes = F.pad(text_embeddings, (0, 0, 0, 1))  # zero background row
        return self.temperature * F.normalize(self.linear(x), dim=1) @ classes.t()


class TextBoxPredictor(nn.Module):
    """Text classifier plus class-agnostic box deltas from a two-layer MLP.

    Args:
        in_features: width of the box-head features (1024).
        text_dim: width D of the text embeddings.
    """

    def __init__(self, in_features: int, text_dim: int) -> None:
        super().__init__()
        self.cls_score = TextClassifier(in_features, text_dim)
        self.bbox_pred = nn.Sequential(
            nn.Linear(in_features, in_features), nn.ReLU(), nn.Linear(in_features, 4)
        )
        nn.init.normal_(self.bbox_pred[2].weight, std=BOX_PRED_INIT_STD)
        nn.init.zeros_(self.bbox_pred[2].bias)

    def forward(self, x: Tensor, text_embeddings: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns class logits ``Tensor[R, C + 1]`` and box deltas ``Tensor[R, 4]``."""
        return self.cls_score(x, text_embeddings), self.bbox_pred(x)
