from . import backbones, decode_heads, layers  # noqa: F401
