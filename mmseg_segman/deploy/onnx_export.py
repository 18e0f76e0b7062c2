"""ONNX export of an MMSeg segmentor: normalised image (1, 3, H, W) -> logits (1, classes, H, W).

The exported graph is MMSeg's whole-image ``encode_decode``: backbone, decode head and the
resize of the logits to the input size. The data preprocessor (mean/std normalisation,
BGR->RGB, padding) is not part of it: feed images already normalised, as the preprocessor
would (:func:`preprocess_summary` describes it for a config).

The exporter is ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` followed by
onnxscript's translation), which needs the ``onnxscript`` package. While it traces, the
SegMAN operators take their export paths by themselves (the switch is
:func:`mmseg_segman.ops.export.is_exporting`): the selective scan runs as
``selective_scan_export`` and neighborhood attention as a gather of each query's window
(its reference backend); the normal paths are unchanged.
"""
import importlib.util
import os
import os.path as osp
from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from mmengine.config import Config

__all__ = [
    'build_segmentor', 'SegmentorLogits', 'DynamicSegmentorLogits', 'export_onnx',
    'verify_onnx', 'require_packages', 'preprocess_summary', 'strip_debug_metadata',
    'DEFAULT_OPSET'
]

# torch 2.13's dynamo exporter translates to opset 18 natively (other opsets are converted
# afterwards by onnx's version converter).
DEFAULT_OPSET = 18
_INSTALL_HINT = ('pip install {names}  (tested versions are pinned in requirements/tests.txt '
                 'of mmseg-segman)')


def require_packages(*names: str) -> None:
    """Raise ImportError naming every missing package and the pip command that installs it."""
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f'ONNX export/verification needs the package(s) {", ".join(missing)}, '
                          'which are not installed: ' +
                          _INSTALL_HINT.format(names=' '.join(missing)))


def _check_file(path: str, what: str) -> None:
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} file not found: {path}')


def build_segmentor(config: str,
                    checkpoint: Optional[str] = None,
                    cfg_options: Optional[dict] = None) -> Tuple[nn.Module, 'Config']:
    """Build the segmentor of an MMSeg config on CPU in eval mode, optionally with weights.

    Without a checkpoint the weights are the modules' random initialisation (no pretrained
    weights are loaded: ``init_weights`` is not called). SyncBN is turned into BN.

    Args:
        config (str): Config file path.
        checkpoint (str, optional): Checkpoint path or URL (an MMEngine ``.pth`` with
            ``state_dict`` or a bare state dict), read weights-only. Its keys and shapes must
            match the model exactly, unless the config sets ``strict_load=False``.
        cfg_options (dict, optional): Overrides merged into the config (``--cfg-options``).

    Returns:
        (nn.Module, Config): the segmentor and the loaded config.
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_segman  # noqa: F401  (registers the plugin's modules)

    _check_file(config, 'config')
    if checkpoint is not None and '://' not in checkpoint:
        _check_file(checkpoint, 'checkpoint')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'config {config} has no `model` entry')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    if checkpoint is not None:
        _load_weights(model, checkpoint, strict=bool(cfg.get('strict_load', True)))
    return model.cpu().eval(), cfg


def _load_weights(model: nn.Module, checkpoint: str, strict: bool = True) -> None:
    """Load ``checkpoint`` into ``model``; with ``strict``, every key and shape must match.

    The file is read weights-only; a refused, unreadable or mismatched file raises a
    :class:`~mmseg_segman.errors.PluginError` (a ValueError) naming the file and the keys.
    """
    from mmseg_segman.utils.checkpoint import load_state_dict_checked, read_state_dict

    state = read_state_dict(checkpoint, auto_prefix=()).state_dict
    load_state_dict_checked(
        model, state, checkpoint, strict=strict,
        hint='Is it a checkpoint of this config (model family, variant, num_classes)? To '
             'export anyway with only the matching weights (the rest random), pass '
             '--cfg-options strict_load=False.')


class SegmentorLogits(nn.Module):
    """``segmentor.encode_decode`` for one fixed input size: (1, 3, H, W) -> (1, classes, H, W).

    The image metas describe an unpadded image of exactly that size, so the decode head
    resizes its logits to (H, W) as MMSeg's whole-image inference does.
    """

    def __init__(self, segmentor: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.height, self.width = int(height), int(width)
        shape = (self.height, self.width)
        self.img_metas = [dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                               padding_size=[0, 0, 0, 0])]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.segmentor.encode_decode(inputs, self.img_metas)


class DynamicSegmentorLogits(nn.Module):
    """``segmentor.encode_decode`` for any input size: (1, 3, H, W) -> (1, classes, H, W).

    The image metas are made from the input's own shape, so an exported graph keeps H and W
    symbolic: the index tensors of the neighbourhood attention and of the scans are computed
    in the graph from the shape instead of being stored as constants.
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        shape = tuple(inputs.shape[2:])
        metas = [dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                      padding_size=[0, 0, 0, 0])]
        return self.segmentor.encode_decode(inputs, metas)


def strip_debug_metadata(onnx_file: str) -> int:
    """Drop the per-node debug metadata the dynamo exporter writes (Python stack traces and
    FX node names: 4.4 MiB of a 29 MiB SegMAN-T file) and the intermediate shape annotations,
    in place; ONNX Runtime infers shapes itself. Returns the new size in bytes."""
    import onnx

    model = onnx.load(onnx_file)
    for node in model.graph.node:
        del node.metadata_props[:]
    del model.graph.value_info[:]
    onnx.save(model, onnx_file)
    return os.path.getsize(onnx_file)


def _check_shape(shape: Sequence[int]) -> None:
    if len(shape) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                              for s in shape):
        raise ValueError(f'shape must be two positive ints (H, W), got {shape!r}')


# Backbones whose exported graph holds Python decisions on the input size, so a dynamic H/W
# graph would be wrong at other sizes: refused before tracing (LRFormer's attention block
# also raises while tracing a symbolic size, for export paths other than this one).
_FIXED_SIZE_BACKBONES = {
    'SegMANEncoder': ('SegMAN', 'its scan chunking follows that length'),
    'LRFormer': ('LRFormer', "its pooled grids follow the input's aspect ratio"),
}


def export_onnx(segmentor: nn.Module,
                shape: Sequence[int],
                output: str,
                opset: int = DEFAULT_OPSET,
                optimize: bool = True,
                dynamic: bool = False,
                strip_metadata: bool = True) -> Union[SegmentorLogits, DynamicSegmentorLogits]:
    """Export ``segmentor`` for inputs of size ``shape`` = (H, W) to the file ``output``.

    The graph has one input ``input`` (1, 3, H, W) float32 and one output ``logits``
    (1, classes, H, W); the weights are stored inside the file (no external data).

    Args:
        dynamic (bool): Keep H and W symbolic (``shape`` is then only the example the graph
            is traced with): one file serves every size, and index tensors are computed in
            the graph instead of being stored. Verified for SegNeXt. LRFormer and SegMAN
            refuse it: LRFormer's pooled grid follows the input's aspect ratio, and
            SegMAN's export scan fixes its chunking to the example's length, so their
            graphs are right only at the example size (docs/deployment.md). Default: False.
        strip_metadata (bool): Remove the exporter's debug metadata
            (:func:`strip_debug_metadata`). Default: True.

    Returns:
        SegmentorLogits | DynamicSegmentorLogits: the wrapped module that was exported.
    """
    require_packages('onnxscript', 'onnx')
    _check_shape(shape)
    out_dir = osp.dirname(osp.abspath(output))
    if not osp.isdir(out_dir):
        raise FileNotFoundError(f'output directory does not exist: {out_dir}')
    backbone = type(getattr(segmentor, 'backbone', None)).__name__
    if dynamic and backbone in _FIXED_SIZE_BACKBONES:
        family, reason = _FIXED_SIZE_BACKBONES[backbone]
        raise ValueError(f'dynamic=True: {family} graphs are right only at the size they were '
                         f'exported at ({reason}); export one file per input size instead '
                         '(docs/deployment.md)')
    if dynamic:
        wrapper = DynamicSegmentorLogits(segmentor).eval()
        auto = torch.export.Dim.AUTO
        dynamic_shapes = {'inputs': {2: auto, 3: auto}}
    else:
        wrapper = SegmentorLogits(segmentor, *shape).eval()
        dynamic_shapes = None
    example = torch.zeros(1, 3, *shape)
    with torch.no_grad():
        torch.onnx.export(wrapper, (example, ), output, dynamo=True, opset_version=opset,
                          input_names=['input'], output_names=['logits'], external_data=False,
                          optimize=optimize, verbose=False, dynamic_shapes=dynamic_shapes)
    if not osp.isfile(output):
        raise RuntimeError(f'torch.onnx.export returned but wrote no file at {output}')
    if strip_metadata:
        strip_debug_metadata(output)
    return wrapper


def verify_onnx(module: nn.Module,
                onnx_file: str,
                inputs: Optional[torch.Tensor] = None,
                seed: int = 0) -> dict:
    """Run ``onnx_file`` with onnxruntime (CPU) and compare with ``module`` in PyTorch.

    Args:
        module (nn.Module): The exported module (e.g. the :func:`export_onnx` result).
        onnx_file (str): The ONNX file.
        inputs (Tensor, optional): Input (1, 3, H, W); default a standard normal tensor of the
            graph's input shape drawn with ``seed``.
        seed (int): Seed of the default input. Default: 0.

    Returns:
        dict: ``max_abs`` (max |onnx - torch|), ``max_ref`` (max |torch|), ``rel``
        (``max_abs / max_ref``), ``shape`` (ONNX output shape), ``torch_shape``.
    """
    require_packages('onnxruntime')
    import numpy as np
    import onnxruntime as ort

    _check_file(onnx_file, 'ONNX')
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    (graph_input, ) = session.get_inputs()
    if inputs is None:
        if not all(isinstance(s, int) for s in graph_input.shape):
            raise ValueError(f'{onnx_file} has symbolic input dims {graph_input.shape}: pass '
                             'inputs of the size to verify')
        shape = [int(s) for s in graph_input.shape]
        inputs = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = module(inputs).float().numpy()
    (got, ) = session.run(None, {graph_input.name: inputs.numpy().astype(np.float32)})
    if got.shape != ref.shape:
        raise ValueError(f'ONNX output shape {got.shape} differs from PyTorch {ref.shape}')
    max_abs = float(np.abs(got.astype(np.float64) - ref).max())
    max_ref = float(np.abs(ref).max())
    return dict(max_abs=max_abs, max_ref=max_ref, rel=max_abs / max(max_ref, 1e-12),
                shape=tuple(got.shape), torch_shape=tuple(ref.shape))


def preprocess_summary(cfg: 'Config') -> dict:
    """The normalisation the exported graph expects to have been applied (from the config)."""
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    return dict(mean=pre.get('mean'), std=pre.get('std'),
                bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)))


def file_size_mb(path: str) -> float:
    """Size of the file ``path`` in MiB."""
    return os.path.getsize(path) / 2**20
