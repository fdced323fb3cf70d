"""vlpart: open-vocabulary part segmentation (VLPart, ICCV 2023) on PyTorch + torchvision."""

from vlpart.config import Config as Config
from vlpart.model import build_model as build_model
from vlpart.prediction import Prediction as Prediction
from vlpart.predictor import PartSegmenter as PartSegmenter
from vlpart.text import build_text_encoder as build_text_encoder
from vlpart.vocab import Vocabulary as Vocabulary
from vlpart.vocab import parse_vocabulary as parse_vocabulary

__version__ = "0.1.0"
__all__ = [
    "Config",
    "PartSegmenter",
    "Prediction",
    "Vocabulary",
    "__version__",
    "build_model",
    "build_text_encoder",
    "parse_vocabulary",
]
