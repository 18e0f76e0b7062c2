from .batch_size_check import BatchSizeCheckHook  # noqa: F401
from .random_state import RandomStateHook  # noqa: F401
