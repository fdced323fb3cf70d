"""Sharper masks: refine detected objects and parts with Segment Anything (SAM).

Mask R-CNN predicts each mask on a 28×28 grid inside its box, so thin parts (legs, tails,
handles) come out blobby. :class:`SamRefiner` re-segments every kept detection with SAM, using
the detection's box as the prompt:

1. the SAM image embedding is computed **once per image**;
2. all boxes of the image are decoded together (in chunks of :data:`PROMPT_BATCH` prompts), each
   optionally with the detector's mask as a dense prompt (``mask_prompt=True``);
3. of SAM's three candidate masks per box, the one with the highest predicted IoU is kept;
4. holes and specks smaller than ``min_region_area`` pixels are cleaned (:func:`clean_mask`);
   a mask that comes out empty keeps the detector's mask;
5. a part's mask is cut to its parent object's refined mask (``clip_to_parent=True``), so the
   object → part hierarchy stays consistent.

Labels, scores, parent links and **boxes** are the detector's: the box is what the detector
scored and suppressed duplicates with, so box results do not change with refinement (a refined
mask may extend slightly past its box).

Two backends: :class:`SamRefiner` (SAM, ``segment-anything``) and :class:`Sam2Refiner` (SAM 2.1,
``sam2``); the ``sam`` extra installs both, and each is imported only when its refiner is built.
Weights come by variant name (SAM: ``vit_b``, ``vit_l``, ``vit_h``; SAM 2.1: ``tiny``, ``small``,
``base_plus``, ``large``) through :func:`vlpart.weights.fetch` (cache, mirror, download) or from
a local file; they are loaded with ``torch.load(weights_only=True)`` and strictly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from vlpart.prediction import Prediction

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

__all__ = [
    "DEFAULT_SAM2_VARIANT",
    "DEFAULT_SAM_VARIANT",
    "MIN_REGION_AREA",
    "SAM_VARIANTS",
    "SAM2_VARIANTS",
    "Refiner",
    "Sam2Refiner",
    "Sam2Variant",
    "SamRefiner",
    "SamVariant",
    "build_refiner",
    "build_sam",
    "build_sam2",
    "clean_mask",
    "load_sam",
    "load_sam2",
    "select_by_iou",
]


# Connected regions (8-connected) of a refined mask, or holes in it, smaller than this many pixels
# of the original image are removed / filled. SAM's own examples clean automatic masks at 100 px.
MIN_REGION_AREA = 100
# Box prompts decoded per mask-decoder call: the decoder copies the image embedding once per
# prompt (256×64×64 floats, 4 MB), so the chunk bounds memory; the embedding is computed once.
PROMPT_BATCH = 32
# A binary detector mask becomes a dense prompt of ±this logit (SAM's mask input is the logit
# map of an earlier prediction; ±10 is a confident mask, sigmoid(10) ≈ 1 - 5e-5).
MASK_PROMPT_LOGIT = 10.0
SAM_CACHE_SUBDIR = "sam"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


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


@dataclass(frozen=True)
class Sam2Variant:
    """A SAM 2.1 model: its config in the ``sam2`` package, the Hiera trunk's width and block
    count (to recognise local files) and its weights' URL."""

    config: str
    trunk_dim: int
    num_blocks: int
    url: str | None = None


_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
# The four released SAM 2.1 image+video models (Ravi et al., 2024).
SAM2_VARIANTS: dict[str, Sam2Variant] = {
    name: Sam2Variant(
        f"configs/sam2.1/sam2.1_hiera_{short}.yaml",
        dim,
        blocks,
        url=f"{_SAM2_URL}sam2.1_hiera_{name}.pt",
    )
    for name, short, dim, blocks in (
        ("tiny", "t", 96, 12),
        ("small", "s", 96, 16),
        ("base_plus", "b+", 112, 24),
        ("large", "l", 144, 48),
    )
}
DEFAULT_SAM2_VARIANT = "tiny"


class Refiner(Protocol):
    """Anything that turns one image's prediction into one with better masks."""

    def refine(self, image: np.ndarray, prediction: Prediction) -> Prediction:
        """``image``: ``np.ndarray[H, W, 3]`` uint8 RGB; ``prediction``: its detections."""
        ...


def _import_segment_anything():
    try:
        import segment_anything
    except ImportError:
        raise ImportError(
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
        raise ValueError(f"{source}: not a SAM checkpoint (no image_encoder weights)") from None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for variant in SAM_VARIANTS.values():
        if (variant.embed_dim, variant.depth, variant.image_size // variant.patch_size) == (
            width,
            depth,
            grid,
        ):
            return variant
    raise ValueError(
        f"{source}: a SAM encoder of width {width} and depth {depth} is none of "
        f"{', '.join(SAM_VARIANTS)}"
    )


def _weights_file(weights: str | Path, urls: dict[str, str | None], what: str) -> Path:
    """A variant name (fetched into ``$VLPART_CACHE/sam``) or an existing local file."""
    name = str(weights)
    if name in urls:
        from vlpart.weights import fetch

        url = urls[name]
        if url is None:
            raise ValueError(f"{what} variant {name!r} has no download URL; pass a local file")
        return fetch(url, subdir=SAM_CACHE_SUBDIR)
    path = Path(weights)
    if path.is_file():
        return path
    if path.suffix or len(path.parts) > 1:
        raise FileNotFoundError(f"{path}: {what} weights file not found")
    raise ValueError(f"unknown {what} variant {name!r}; choose {', '.join(urls)} or a file")


def _load_state(path: Path, what: str) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and unpickler errors all mean "unreadable"
        raise ValueError(f"{path}: not a readable {what} checkpoint ({err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a {what} checkpoint (a {type(state).__name__})")
    return state


def load_sam(weights: str | Path = DEFAULT_SAM_VARIANT) -> Sam:
    """A SAM model with its weights, on the CPU, in eval mode.

    Args:
        weights: a variant name of :data:`SAM_VARIANTS` (fetched through
            :func:`vlpart.weights.fetch` into ``$VLPART_CACHE/sam``) or a local ``.pth`` file
            of the official format (its variant is read from its tensor shapes).

    Raises:
        FileNotFoundError: a missing local file, or named weights not cached while offline
            (saying what to fetch and where to put it).
        ValueError: an unknown name, or a file that is not a SAM checkpoint of a known variant.
    """
    from vlpart.model.checkpoint import load_state_dict_strict

    path = _weights_file(weights, {k: v.url for k, v in SAM_VARIANTS.items()}, "SAM")
    state = _load_state(path, "SAM")
    sam = build_sam(_variant_of(state, str(path)))
    load_state_dict_strict(sam, state, source=str(path))
    return sam


def build_sam2(variant: Sam2Variant) -> nn.Module:
    """A randomly initialised SAM 2 (``sam2.modeling.sam2_base.SAM2Base``), in eval mode."""
    try:
        from sam2.build_sam import build_sam2 as build
    except ImportError:
        raise ImportError(
            "SAM 2 refinement needs the sam2 package: pip install 'vlpart[sam]'"
        ) from None
    return build(variant.config, None, device="cpu").eval()


def load_sam2(weights: str | Path = DEFAULT_SAM2_VARIANT) -> nn.Module:
    """A SAM 2.1 model with its weights (a name of :data:`SAM2_VARIANTS` or a local ``.pt`` of
    the official format, ``{"model": state}``), on the CPU, in eval mode; raises as
    :func:`load_sam`."""
    from vlpart.model.checkpoint import load_state_dict_strict

    path = _weights_file(weights, {k: v.url for k, v in SAM2_VARIANTS.items()}, "SAM 2")
    state = _load_state(path, "SAM 2").get("model")
    if not isinstance(state, dict) or "image_encoder.trunk.patch_embed.proj.weight" not in state:
        raise ValueError(f"{path}: not a SAM 2 checkpoint (no model.image_encoder.trunk)")
    dim = state["image_encoder.trunk.patch_embed.proj.weight"].shape[0]
    blocks = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
    match = [v for v in SAM2_VARIANTS.values() if (v.trunk_dim, v.num_blocks) == (dim, blocks)]
    if not match:
        raise ValueError(
            f"{path}: a SAM 2 trunk of width {dim} with {blocks} blocks is none of "
            f"{', '.join(SAM2_VARIANTS)}"
        )
    model = build_sam2(match[0])
    load_state_dict_strict(model, state, source=str(path))
    return model


def clean_mask(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Fill holes and drop specks smaller than ``min_area`` pixels (8-connected).

    A hole is a background region enclosed by the mask (not reaching the border of the mask's
    bounding box). When every region of the mask is smaller than ``min_area``, the largest is
    kept, so a small part is never erased.

    Args:
        mask (np.ndarray[H, W], bool): one instance mask.
        min_area: area threshold in pixels; 0 returns the mask unchanged.

    Returns:
        np.ndarray[H, W], bool: a new mask.
    """
    if min_area <= 0 or not mask.any():
        return mask.copy()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1)  # the pad ring joins all outside background
    regions, num = ndimage.label(crop, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(regions.ravel(), minlength=num + 1)[1:]
    keep = sizes >= min_area
    if not keep.any():
        keep[np.argmax(sizes)] = True
    cleaned = keep[regions - 1] & (regions > 0)
    holes, num_holes = ndimage.label(~cleaned, structure=_EIGHT_CONNECTED)
    hole_sizes = np.bincount(holes.ravel(), minlength=num_holes + 1)
    fill = hole_sizes < min_area
    fill[0] = False  # label 0 is the mask itself
    fill[holes[0, 0]] = False  # the outside, reached through the pad ring
    cleaned |= fill[holes]
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = cleaned[1:-1, 1:-1]
    return out


def select_by_iou(mask_logits: Tensor, iou_predictions: Tensor) -> Tensor:
    """The candidate mask with the highest predicted IoU, per prompt.

    Args:
        mask_logits (Tensor[N, K, h, w]): SAM's K candidate masks per prompt.
        iou_predictions (Tensor[N, K]): their predicted IoUs.

    Returns:
        Tensor[N, 1, h, w]: the chosen logits.
    """
    best = iou_predictions.argmax(dim=1)
    return mask_logits[torch.arange(len(best), device=best.device), best][:, None]


class _BoxRefiner:
    """The steps every backend shares: box prompts → best masks (``_segment``) → cleaning,
    fallback to the detector's mask, parent cut (see the module docstring)."""

    def __init__(
        self,
        *,
        mask_prompt: bool,
        clip_to_parent: bool,
        min_region_area: int,
        device: str | torch.device,
    ) -> None:
        if min_region_area < 0:
            raise ValueError(f"min_region_area must be >= 0, got {min_region_area}")
        self.device = torch.device(device)
        self.mask_prompt = mask_prompt
        self.clip_to_parent = clip_to_parent
        self.min_region_area = min_region_area

    def _segment(
        self, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None
    ) -> np.ndarray:
        """``np.ndarray[N, H, W]`` bool: the backend's best mask per box (XYXY, original px),
        prompted also with the detector's ``masks`` when given."""
        raise NotImplementedError

    def refine(self, image: np.ndarray, prediction: Prediction) -> Prediction:
        """``prediction`` with refined masks; everything else unchanged.

        Args:
            image (np.ndarray[H, W, 3], uint8): the RGB image ``prediction`` was made on.
            prediction: its detections (masks of shape ``[N, H, W]``).

        Returns:
            A new :class:`~vlpart.prediction.Prediction`.
        """
        if len(prediction) == 0:
            return prediction
        size = tuple(image.shape[:2])
        if prediction.image_size != size:
            raise ValueError(f"image is {size}, prediction is for {prediction.image_size}")
        refined = self._segment(
            image, prediction.boxes, prediction.masks if self.mask_prompt else None
        )
        for i in range(len(refined)):
            refined[i] = clean_mask(refined[i], self.min_region_area)
            if not refined[i].any():
                refined[i] = prediction.masks[i]
        if self.clip_to_parent:
            for i, parent in enumerate(prediction.parent):
                if parent >= 0:
                    refined[i] &= refined[parent]
        return dataclasses.replace(prediction, masks=refined)

    def _options(self) -> str:
        return (
            f"mask_prompt={self.mask_prompt}, clip_to_parent={self.clip_to_parent}, "
            f"min_region_area={self.min_region_area}, device={str(self.device)!r}"
        )


class SamRefiner(_BoxRefiner):
    """Re-segment detections with SAM box prompts (see the module docstring).

    Holds no per-image state: one refiner can serve concurrent requests.

    Args:
        sam: a ``segment_anything`` ``Sam`` model (moved to ``device``, eval mode).
        mask_prompt: also prompt SAM with the detector's mask (a dense prompt), which keeps the
            refined mask closer to the detector's; default box prompts only.
        clip_to_parent: cut each part's mask to its parent object's refined mask (default); set
            False to let parts leak outside their objects.
        min_region_area: holes and specks below this many pixels are cleaned (0: off).
        device: where SAM runs.
    """

    def __init__(
        self,
        sam: Sam,
        *,
        mask_prompt: bool = False,
        clip_to_parent: bool = True,
        min_region_area: int = MIN_REGION_AREA,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(
            mask_prompt=mask_prompt,
            clip_to_parent=clip_to_parent,
            min_region_area=min_region_area,
            device=device,
        )
        transforms = _import_segment_anything().utils.transforms
        self.sam = sam.eval().to(self.device)
        self._resize = transforms.ResizeLongestSide(sam.image_encoder.img_size)

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
        return self.sam.image_encoder(self.sam.preprocess(x)), tuple(resized.shape[:2])

    def _mask_prompts(self, masks: np.ndarray, input_size: tuple[int, int]) -> Tensor:
        """Detector masks ``[n, H, W]`` bool → dense prompts ``[n, 1, 256, 256]`` logits, laid
        out like SAM's input (resized with the image, padded at the bottom/right)."""
        side = self.sam.prompt_encoder.mask_input_size[0]
        scale = side / self.sam.image_encoder.img_size
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
        dense_pe = self.sam.prompt_encoder.get_dense_pe()
        all_boxes = self._resize.apply_boxes_torch(
            torch.as_tensor(boxes, dtype=torch.float32, device=self.device), original_size
        )
        for start in range(0, len(boxes), PROMPT_BATCH):
            stop = start + PROMPT_BATCH
            mask_input = (
                self._mask_prompts(masks[start:stop], input_size) if masks is not None else None
            )
            sparse, dense = self.sam.prompt_encoder(
                points=None, boxes=all_boxes[start:stop], masks=mask_input
            )
            logits, iou = self.sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            best = self.sam.postprocess_masks(select_by_iou(logits, iou), input_size, original_size)
            out[start:stop] = (best[:, 0] > self.sam.mask_threshold).cpu().numpy()
        return out

    def _segment(
        self, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None
    ) -> np.ndarray:
        embedding, input_size = self.image_embedding(image)
        return self.predict_masks(embedding, input_size, tuple(image.shape[:2]), boxes, masks)

    def __repr__(self) -> str:
        enc = self.sam.image_encoder
        return (
            f"SamRefiner(embed_dim={enc.patch_embed.proj.out_channels}, depth={len(enc.blocks)}, "
            f"{self._options()})"
        )


class Sam2Refiner(_BoxRefiner):
    """Re-segment detections with SAM 2.1 box prompts; arguments as :class:`SamRefiner`, with
    ``model`` a ``sam2`` ``SAM2Base``.

    Each call wraps the model in a fresh ``SAM2ImagePredictor`` (it keeps the image's features),
    so the refiner itself holds no per-image state. SAM 2 resizes images to a square, so the
    dense prompt is the detector's mask resized to 256×256 without padding.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mask_prompt: bool = False,
        clip_to_parent: bool = True,
        min_region_area: int = MIN_REGION_AREA,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(
            mask_prompt=mask_prompt,
            clip_to_parent=clip_to_parent,
            min_region_area=min_region_area,
            device=device,
        )
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.model = model.eval().to(self.device)
        self._predictor = SAM2ImagePredictor

    @classmethod
    def from_pretrained(cls, weights: str | Path = DEFAULT_SAM2_VARIANT, **options) -> Sam2Refiner:
        """A refiner with SAM 2.1 weights by variant name or local file (see
        :func:`load_sam2`); ``options`` are the constructor's keyword arguments."""
        return cls(load_sam2(weights), **options)

    @torch.inference_mode()
    def _segment(
        self, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None
    ) -> np.ndarray:
        size = tuple(image.shape[:2])
        predictor = self._predictor(self.model)
        predictor.set_image(image)  # the one image embedding
        all_boxes = predictor._transforms.transform_boxes(
            torch.as_tensor(boxes, dtype=torch.float32, device=self.device),
            normalize=True,
            orig_hw=size,
        )
        out = np.zeros((len(boxes), *size), dtype=bool)
        side = self.model.sam_prompt_encoder.mask_input_size
        for start in range(0, len(boxes), PROMPT_BATCH):
            stop = start + PROMPT_BATCH
            mask_input = None
            if masks is not None:
                x = torch.as_tensor(masks[start:stop], device=self.device)[:, None].float()
                mask_input = (2 * F.interpolate(x, side, mode="area") - 1) * MASK_PROMPT_LOGIT
            logits, iou, _ = predictor._predict(
                None,
                None,
                boxes=all_boxes[start:stop],
                mask_input=mask_input,
                multimask_output=True,
                return_logits=True,
            )
            out[start:stop] = (select_by_iou(logits, iou)[:, 0] > 0).cpu().numpy()
        return out

    def __repr__(self) -> str:
        trunk = self.model.image_encoder.trunk
        return (
            f"Sam2Refiner(trunk_dim={trunk.patch_embed.proj.out_channels}, "
            f"blocks={len(trunk.blocks)}, {self._options()})"
        )


def build_refiner(
    spec: str, *, device: str | torch.device = "cpu", **options
) -> SamRefiner | Sam2Refiner:
    """A refiner from a spec: ``sam`` (= ``sam:vit_b``), ``sam:vit_l``, ``sam:vit_h``,
    ``sam:FILE.pth``; ``sam2`` (= ``sam2:tiny``), ``sam2:small``, ``sam2:base_plus``,
    ``sam2:large``, ``sam2:FILE.pt``.

    ``options`` are the refiner's keyword arguments.

    Raises:
        ValueError: an unknown refiner or variant; see :func:`load_sam` for the weights.
    """
    kind, _, weights = spec.partition(":")
    if kind == "sam":
        return SamRefiner.from_pretrained(weights or DEFAULT_SAM_VARIANT, device=device, **options)
    if kind == "sam2":
        return Sam2Refiner.from_pretrained(
            weights or DEFAULT_SAM2_VARIANT, device=device, **options
        )
    raise ValueError(
        f"unknown refiner {spec!r}; use sam[:vit_b|vit_l|vit_h|FILE] or sam2[:tiny|...]"
    )
