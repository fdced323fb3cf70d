"""Parsing novel objects into parts through dense semantic correspondence with base objects.

>>> extractor = build_feature_extractor("dino_vits8", weights="dino_vits8.safetensors")
>>> bank = BaseBank.build(base_objects, extractor)
>>> parse_images(items, "parsed.json", bank=bank, vocabulary="pascal_part", extractor=extractor)
"""

from vlpart.parsing.bank import BaseBank as BaseBank
from vlpart.parsing.bank import BaseObject as BaseObject
from vlpart.parsing.features import FeatureExtractor as FeatureExtractor
from vlpart.parsing.features import Features as Features
from vlpart.parsing.features import build_feature_extractor as build_feature_extractor
from vlpart.parsing.parser import Detections as Detections
from vlpart.parsing.parser import ParseConfig as ParseConfig
from vlpart.parsing.parser import ParseItem as ParseItem
from vlpart.parsing.parser import Parser as Parser
from vlpart.parsing.parser import Proposals as Proposals
from vlpart.parsing.parser import merge_shards as merge_shards
from vlpart.parsing.parser import parse_images as parse_images

__all__ = [
    "BaseBank",
    "BaseObject",
    "Detections",
    "FeatureExtractor",
    "Features",
    "ParseConfig",
    "ParseItem",
    "Parser",
    "Proposals",
    "build_feature_extractor",
    "merge_shards",
    "parse_images",
]
