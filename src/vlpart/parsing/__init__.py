"""Parsing novel objects into parts through dense semantic correspondence with base objects.

>>> extractor = build_feature_extractor("dino_vits8", weights="dino_vits8.safetensors")
>>> bank = BaseBank.build(base_objects, extractor)
>>> Parser(extractor, bank, parse_vocabulary("pascal_part")).run(items, "parsed.json")

Whole runs from COCO files (bank, crops, detector proposals, ``torchrun`` shards) are driven by
:func:`vlpart.parsing.run.run_parse`.
"""

from vlpart.parsing.bank import BaseBank as BaseBank
from vlpart.parsing.bank import BaseObject as BaseObject
from vlpart.parsing.features import FeatureExtractor as FeatureExtractor
from vlpart.parsing.features import Features as Features
from vlpart.parsing.features import build_feature_extractor as build_feature_extractor
from vlpart.parsing.parser import ParseItem as ParseItem
from vlpart.parsing.parser import Parser as Parser
from vlpart.parsing.parser import Proposals as Proposals

__all__ = [
    "BaseBank",
    "BaseObject",
    "FeatureExtractor",
    "Features",
    "ParseItem",
    "Parser",
    "Proposals",
    "build_feature_extractor",
]
