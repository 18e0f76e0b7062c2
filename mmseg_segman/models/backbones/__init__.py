
from .segman import SegMANEncoder  # noqa: F401
