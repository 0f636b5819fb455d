"""How batchaug meets the device: counting host synchronizations, per-device constants, out-of-memory
errors across PyTorch versions and back ends.

Nothing here knows a method, a model or a policy; the augmentation engine, the layers and the trainer
use these helpers so that their CUDA paths can be checked on the CPU.
"""

from batchaug.runtime.constants import device_constant
from batchaug.runtime.memory import is_out_of_memory, release_cached_memory
from batchaug.runtime.syncs import SyncCounts, count_syncs

__all__ = ["SyncCounts", "count_syncs", "device_constant", "is_out_of_memory", "release_cached_memory"]
