"""SAM (Kirillov et al., 2023) as a refinement backend, through the ``segment-anything``
package: the three released ViT variants, strict loading of their checkpoints, and
:class:`SamRefiner`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlpart.core.errors import InputError, MissingDependencyError
from vlpart.inference.refine.base import (
    MASK_PROMPT_LOGIT,
    PROMPT_BATCH,
    BoxRefiner,
    discard_bad_download,
    load_state,
    select_by_iou,
    weights_file,
)

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

__all__ = [
    "DEFAULT_SAM_VARIANT",
    "SAM_VARIANTS",
    "SamRefiner",
    "SamVariant",
    "build_sam",
    "load_sam",
]


@dataclass(frozen=True)
class SamVariant:
    """The architecture of a SAM model (defaults: the released models') and its weights' URL.

    Attributes:
        embed_dim, depth, num_heads, global_attn_indexes: the ViT image encoder.
        url: the official checkpoint (``None``: local files only).
        image_size: side of the square encoder input; the embedding is ``image_size / 16``.
        prompt_dim: width of the prompt encoder, mask decoder and image embedding.
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    url: str | None = None
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    mask_in_chans: int = 16


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
# The three released SAM models (Kirillov et al., 2023).
SAM_VARIANTS: dict[str, SamVariant] = {
    "vit_b": SamVariant(768, 12, 12, (2, 5, 8, 11), url=_SAM_URL + "sam_vit_b_01ec64.pth"),
    "vit_l": SamVariant(1024, 24, 16, (5, 11, 17, 23), url=_SAM_URL + "sam_vit_l_0b3195.pth"),
    "vit_h": SamVariant(1280, 32, 16, (7, 15, 23, 31), url=_SAM_URL + "sam_vit_h_4b8939.pth"),
}
DEFAULT_SAM_VARIANT = "vit_b"


def _import_segment_anything():
    try:
        import segment_anything
    except ImportError:
        raise MissingDependencyError(
            "SAM refinement needs the segment-anything package: pip install 'vlpart[sam]'"
        ) from None
    return segment_anything


def build_sam(variant: SamVariant) -> Sam:
    """A randomly initialised SAM of ``variant``'s architecture, in eval mode."""
    modeling = _import_segment_anything().modeling
    grid = variant.image_size // variant.patch_size
    sam = modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            img_size=variant.image_size,
            patch_size=variant.patch_size,
            embed_dim=variant.embed_dim,
            depth=variant.depth,
            num_heads=variant.num_heads,
            mlp_ratio=4.0,
            out_chans=variant.prompt_dim,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=variant.window_size,
            global_attn_indexes=variant.global_attn_indexes,
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=variant.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(variant.image_size, variant.image_size),
            mask_in_chans=variant.mask_in_chans,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2,
                embedding_dim=variant.prompt_dim,
                mlp_dim=variant.decoder_mlp_dim,
                num_heads=variant.decoder_num_heads,
            ),
            transformer_dim=variant.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=variant.prompt_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _variant_of(state: dict[str, Tensor], source: str) -> SamVariant:
    """The known variant whose encoder width, depth and input size match ``state``."""
    try:
        width = state["image_encoder.patch_embed.proj.weight"].shape[0]
        grid = state["image_encoder.pos_embed"].shape[1]
    except (KeyError, AttributeError, IndexError):
        raise InputError(f"{source}: not a SAM checkpoint (no image_encoder weights)") from None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for variant in SAM_VARIANTS.values():
        if (variant.embed_dim, variant.depth, variant.image_size // variant.patch_size) == (
            width,
            depth,
            grid,
        ):
            return variant
    raise InputError(
        f"{source}: a SAM encoder of width {width} and depth {depth} is none of "
        f"{', '.join(SAM_VARIANTS)}"
    )


def load_sam(weights: str | Path = DEFAULT_SAM_VARIANT) -> Sam:
    """A SAM model with its weights, on the CPU, in eval mode.

    Args:
        weights: a variant name of :data:`SAM_VARIANTS` (fetched through
            :func:`vlpart.core.weights.fetch` into ``$VLPART_CACHE/sam``) or a local ``.pth`` file
            of the official format (its variant is read from its tensor shapes).

    Raises:
        FileNotFoundError: a missing local file, or named weights not cached while offline
            (saying what to fetch and where to put it).
        ValueError: an unknown name, or a file that is not a SAM checkpoint of a known variant.
    """
    from vlpart.model.checkpoint import load_state_dict_strict

    path = weights_file(weights, {k: v.url for k, v in SAM_VARIANTS.items()}, "SAM")
    with discard_bad_download(weights, path):
        state = load_state(path, "SAM")
        sam = build_sam(_variant_of(state, str(path)))
        load_state_dict_strict(sam, state, source=str(path))
    return sam


class SamRefiner(BoxRefiner):
    """Re-segment detections with SAM box prompts (see the module docstring); arguments as
    :class:`~vlpart.inference.refine.base.BoxRefiner`, with ``model`` a ``segment_anything``
    ``Sam``.

    Holds no per-image state: one refiner can serve concurrent requests.
    """

    @property
    def sam(self) -> Sam:
        """The ``segment_anything`` ``Sam`` model (``model``)."""
        return self.model

    @cached_property
    def _resize(self):
        """SAM's resize of the longest side to the encoder's input size."""
        transforms = _import_segment_anything().utils.transforms
        return transforms.ResizeLongestSide(self.model.image_encoder.img_size)

    @classmethod
    def from_pretrained(cls, weights: str | Path = DEFAULT_SAM_VARIANT, **options) -> SamRefiner:
        """A refiner with SAM weights by variant name or local file (see :func:`load_sam`);
        ``options`` are the constructor's keyword arguments."""
        return cls(load_sam(weights), **options)

    @torch.inference_mode()
    def image_embedding(self, image: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        """SAM's embedding of one image.

        Args:
            image (np.ndarray[H, W, 3], uint8): RGB.

        Returns:
            ``Tensor[1, prompt_dim, 64, 64]`` (for 1024-px SAM) and the ``(h, w)`` the image was
            resized to (longest side = the encoder's input size) before padding.
        """
        resized = self._resize.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        return self.model.image_encoder(self.model.preprocess(x)), tuple(resized.shape[:2])

    def _mask_prompts(self, masks: np.ndarray, input_size: tuple[int, int]) -> Tensor:
        """Detector masks ``[n, H, W]`` bool → dense prompts ``[n, 1, 256, 256]`` logits, laid
        out like SAM's input (resized with the image, padded at the bottom/right)."""
        side = self.model.prompt_encoder.mask_input_size[0]
        scale = side / self.model.image_encoder.img_size
        h, w = round(input_size[0] * scale), round(input_size[1] * scale)
        x = torch.as_tensor(masks, device=self.device)[:, None].float()
        x = F.pad(F.interpolate(x, (h, w), mode="area"), (0, side - w, 0, side - h))
        return (2 * x - 1) * MASK_PROMPT_LOGIT

    @torch.inference_mode()
    def predict_masks(
        self,
        embedding: Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        boxes: np.ndarray,
        masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """SAM's best mask for each box prompt, in original pixels.

        Args:
            embedding, input_size: from :meth:`image_embedding`.
            original_size: ``(H, W)`` of the image.
            boxes (np.ndarray[N, 4]): XYXY, original pixels.
            masks (np.ndarray[N, H, W], bool): dense prompts, or None for box prompts only.

        Returns:
            np.ndarray[N, H, W], bool.
        """
        out = np.zeros((len(boxes), *original_size), dtype=bool)
        dense_pe = self.model.prompt_encoder.get_dense_pe()
        all_boxes = self._resize.apply_boxes_torch(
            torch.as_tensor(boxes, dtype=torch.float32, device=self.device), original_size
        )
        for start in range(0, len(boxes), PROMPT_BATCH):
            stop = start + PROMPT_BATCH
            mask_input = (
                self._mask_prompts(masks[start:stop], input_size) if masks is not None else None
            )
            sparse, dense = self.model.prompt_encoder(
                points=None, boxes=all_boxes[start:stop], masks=mask_input
            )
            logits, iou = self.model.mask_decoder(
                image_embeddings=embedding,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            best = self.model.postprocess_masks(
                select_by_iou(logits, iou), input_size, original_size
            )
            out[start:stop] = (best[:, 0] > self.model.mask_threshold).cpu().numpy()
        return out

    def _segment(
        self, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None
    ) -> np.ndarray:
        embedding, input_size = self.image_embedding(image)
        return self.predict_masks(embedding, input_size, tuple(image.shape[:2]), boxes, masks)

    def __repr__(self) -> str:
        enc = self.model.image_encoder
        return (
            f"SamRefiner(embed_dim={enc.patch_embed.proj.out_channels}, depth={len(enc.blocks)}, "
            f"{self._options()})"
        )
