from . import hooks  # noqa: F401
from .strict_load import enable_strict_evaluation_loading  # noqa: E402

enable_strict_evaluation_loading()  # evaluation refuses checkpoints that do not fit
