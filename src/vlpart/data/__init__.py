"""Training and evaluation data: COCO/LVIS-format datasets of the four data kinds, transforms,
the multi-dataset batch sampler, the Pascal-Part converter and the synthetic parts world."""

from vlpart.data.datasets import DetectionDataset as DetectionDataset
from vlpart.data.datasets import ImageLabelDataset as ImageLabelDataset
from vlpart.data.datasets import LvisDataset as LvisDataset
from vlpart.data.datasets import MultiDataset as MultiDataset
from vlpart.data.datasets import SampleKey as SampleKey
from vlpart.data.datasets import collate as collate
from vlpart.data.pascal_part import convert_pascal_part as convert_pascal_part
from vlpart.data.sampler import MultiDatasetBatchSampler as MultiDatasetBatchSampler
from vlpart.data.sampler import repeat_factors as repeat_factors
from vlpart.data.synth import synthesize_world as synthesize_world
from vlpart.data.transforms import Compose as Compose
from vlpart.data.transforms import RandomHorizontalFlip as RandomHorizontalFlip
from vlpart.data.transforms import ResizeShortestEdge as ResizeShortestEdge
from vlpart.kinds import DataKind as DataKind

__all__ = [
    "Compose",
    "DataKind",
    "DetectionDataset",
    "ImageLabelDataset",
    "LvisDataset",
    "MultiDataset",
    "MultiDatasetBatchSampler",
    "RandomHorizontalFlip",
    "ResizeShortestEdge",
    "SampleKey",
    "collate",
    "convert_pascal_part",
    "repeat_factors",
    "synthesize_world",
]
