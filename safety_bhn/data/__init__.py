"""Data layer: IDX files, MNIST / Fashion-MNIST loading, download and the embedded MNIST copy."""

from .datasets import (
    DatasetName,
    class_list,
    download,
    embedded_mnist,
    load_dataset,
    resolve_data_dir,
    select_classes,
)
from .idx import DataError, read_idx, write_idx

__all__ = [
    "DataError",
    "DatasetName",
    "download",
    "embedded_mnist",
    "load_dataset",
    "read_idx",
    "resolve_data_dir",
    "class_list",
    "select_classes",
    "write_idx",
]
