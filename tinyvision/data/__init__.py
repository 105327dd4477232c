"""Datasets: the registry and load_dataset (catalog), splits and ImageDataset (splits), folder:/npz:
sources (sources), file parsers (formats, with matfile for SVHN and images for image files),
downloads (fetch), a run config's dataset cached per process (cached)."""
from __future__ import annotations

from .catalog import (DATASETS, DatasetInfo, ImageDataset, Split, dataset_info, dataset_status,
                      list_datasets, load_dataset)
from .cached import load_data
from .fetch import RemoteFile, data_root, ensure_files
from .formats import (parse_idx, read_cifar10_tar, read_idx, read_image_folder, read_npz,
                      read_svhn_mat)

__all__ = [
    "DATASETS", "DatasetInfo", "ImageDataset", "RemoteFile", "Split", "data_root",
    "dataset_info", "dataset_status", "ensure_files", "list_datasets", "load_data", "load_dataset",
    "parse_idx", "read_cifar10_tar", "read_idx", "read_image_folder", "read_npz", "read_svhn_mat",
]
