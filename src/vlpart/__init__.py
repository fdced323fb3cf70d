"""vlpart: open-vocabulary part segmentation (VLPart, ICCV 2023) on PyTorch + torchvision.

The public names are imported on first use (PEP 562), so that ``import vlpart`` and
``vlpart --help`` do not pay for torch until a command needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlpart.core.config import Config as Config
    from vlpart.core.vocab import Vocabulary as Vocabulary
    from vlpart.core.vocab import parse_vocabulary as parse_vocabulary
    from vlpart.inference.label import label as label
    from vlpart.inference.prediction import Prediction as Prediction
    from vlpart.inference.segmenter import PartSegmenter as PartSegmenter
    from vlpart.model import build_model as build_model
    from vlpart.text import build_text_encoder as build_text_encoder
    from vlpart.training.finetune import finetune as finetune

__version__ = "0.1.0"
__all__ = [
    "Config",
    "PartSegmenter",
    "Prediction",
    "Vocabulary",
    "__version__",
    "build_model",
    "build_text_encoder",
    "label",
    "finetune",
    "parse_vocabulary",
]

# Public name -> the module that defines it.
_EXPORTS = {
    "Config": "vlpart.core.config",
    "PartSegmenter": "vlpart.inference.segmenter",
    "Prediction": "vlpart.inference.prediction",
    "Vocabulary": "vlpart.core.vocab",
    "build_model": "vlpart.model",
    "build_text_encoder": "vlpart.text",
    "label": "vlpart.inference.label",
    "finetune": "vlpart.training.finetune",
    "parse_vocabulary": "vlpart.core.vocab",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vlpart' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
