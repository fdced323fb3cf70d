"""Training and evaluation data: COCO/LVIS-format datasets of the four data kinds, transforms,
the multi-dataset batch sampler, the Pascal-Part converter."""

from vlpart.core.kinds import DataKind as DataKind
from vlpart.data.datasets import DetectionDataset as DetectionDataset
from vlpart.data.datasets import ImageLabelDataset as ImageLabelDataset
from vlpart.data.datasets import LvisDataset as LvisDataset
from vlpart.data.datasets import MultiDataset as MultiDataset
from vlpart.data.datasets import SampleKey as SampleKey
from vlpart.data.datasets import collate as collate
from vlpart.data.pascal_part import convert_pascal_part as convert_pascal_part
from vlpart.data.sampler import MultiDatasetBatchSampler as MultiDatasetBatchSampler
from vlpart.data.sampler import repeat_factors as repeat_factors
from vlpart.data.transforms import Compose as Compose
from vlpart.data.transforms import RandomHorizontalFlip as RandomHorizontalFlip
from vlpart.data.transforms import ResizeShortestEdge as ResizeShortestEdge

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
]
