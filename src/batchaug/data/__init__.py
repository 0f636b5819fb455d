"""Data sources and loaders.

Image datasets load whole as uint8 tensors (:func:`load_split` -> :class:`TensorSplit`), to be
kept on the training device and augmented there, or lazily one image at a time
(:class:`ImageFolderSource` through a DataLoader with :func:`collate_uint8`) when they do not fit in
memory. Which samples each step trains on is :class:`EpochBatchSampler` (a function of the step, so
resumes are exact); :class:`StepBatches` brings them to the device, in memory or streamed. Penn
Treebank lives in :mod:`batchaug.data.ptb`. For DataLoader pipelines with their own per-sample
transforms, :class:`RepeatedAugSampler` and :class:`RepeatedAugCollate` make Batch Augmentation's
batches (M views of every sample, adjacent).

Where data is looked for: an explicit path, then ``$BATCHAUG_DATA``, then ``$BATCHAUG_CACHE``
(default ``~/.cache/batchaug``), which also holds the decoded-tensor cache.
"""

from batchaug.data.archive import DirTree, FileTree, ZipTree, open_tree
from batchaug.data.batches import EpochBatchSampler, StepBatches
from batchaug.data.cache import cache_path
from batchaug.data.decode import (
    IMAGE_EXTENSIONS,
    RESIZE_MODES,
    decode_image,
    fit_to_size,
)
from batchaug.data.imagefolder import ImageFolderSource, Layout, discover_layout
from batchaug.data.loader import collate_uint8
from batchaug.data.paths import CACHE_ENV, DATA_ENV, cache_dir, resolve_data_path
from batchaug.data.repeated import RepeatedAugCollate, RepeatedAugSampler
from batchaug.data.sources import (
    DEFAULT_NAMES,
    KINDS,
    cache_split,
    dataset_info,
    detect_kind,
    load_split,
    resolve_source,
    verify_source,
)
from batchaug.data.stats import CIFAR_STATS, stats_for
from batchaug.data.tensors import TensorSplit, class_quotas, stratified_indices

__all__ = [
    "CACHE_ENV", "CIFAR_STATS", "DATA_ENV", "DEFAULT_NAMES", "IMAGE_EXTENSIONS", "KINDS",
    "RESIZE_MODES", "DirTree", "EpochBatchSampler", "FileTree", "ImageFolderSource", "Layout",
    "RepeatedAugCollate", "RepeatedAugSampler", "StepBatches",
    "TensorSplit", "ZipTree", "cache_dir", "cache_path", "cache_split", "class_quotas", "collate_uint8",
    "dataset_info", "decode_image", "detect_kind", "discover_layout", "fit_to_size", "load_split",
    "open_tree", "resolve_data_path", "resolve_source", "stats_for",
    "stratified_indices", "verify_source",
]
