"""The VLPart detector on torchvision: backbones with FPN, text-classifier RoI heads (plain and
cascade), losses, ``build_model(config)``, checkpoints and the official-checkpoint converter."""

from vlpart.core.kinds import DataKind as DataKind
from vlpart.model.backbones import build_backbone as build_backbone
from vlpart.model.backbones import resolve_weights as resolve_weights
from vlpart.model.cascade import CascadeRoIHeads as CascadeRoIHeads
from vlpart.model.checkpoint import CheckpointInfo as CheckpointInfo
from vlpart.model.checkpoint import load_checkpoint as load_checkpoint
from vlpart.model.checkpoint import save_checkpoint as save_checkpoint
from vlpart.model.convert import convert_official_checkpoint as convert_official_checkpoint
from vlpart.model.detector import VLPartDetector as VLPartDetector
from vlpart.model.detector import build_model as build_model
from vlpart.model.losses import LOSS_WEIGHTS as LOSS_WEIGHTS
from vlpart.model.roi_heads import TextRoIHeads as TextRoIHeads
from vlpart.model.text_classifier import CLS_TEMPERATURE as CLS_TEMPERATURE
from vlpart.model.text_classifier import TextClassifier as TextClassifier

__all__ = [
    "CLS_TEMPERATURE",
    "LOSS_WEIGHTS",
    "CascadeRoIHeads",
    "CheckpointInfo",
    "DataKind",
    "TextClassifier",
    "TextRoIHeads",
    "VLPartDetector",
    "build_backbone",
    "build_model",
    "convert_official_checkpoint",
    "load_checkpoint",
    "resolve_weights",
    "save_checkpoint",
]
