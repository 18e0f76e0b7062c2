"""Convert the authors' released checkpoints to the layouts MMSeg 1.x and the plugin load.

* SegNeXt: the official MSCAN files store the MLP's depthwise conv as ``mlp.dwconv.dwconv.*``;
  MMSeg's own ``MSCAN`` expects ``mlp.dwconv.*``. ImageNet files lose their classifier
  (``head.*``); segmentation files keep their ``decode_head.*`` keys.
* SegMAN / LRFormer ImageNet files (timm / DeiT style, EMA weights preferred) become plain
  backbone state dicts without the classifier.

The variant is found from the file itself (the one whose keys and shapes match exactly); a file
of another architecture is refused with the mismatching keys named. Used by
``tools/model_converters/*2mmseg.py``.
"""
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from .utils.checkpoint import CheckpointMismatchError, read_state_dict

__all__ = ['ConversionReport', 'convert_checkpoint', 'describe', 'save_converted', 'main',
           'FAMILIES']

# family -> (backbone type, key prefixes of the ImageNet classifier)
FAMILIES = {
    'segnext': ('SegNeXtMSCAN', ('head.', )),
    'segman': ('SegMANEncoder', ('classifier.', )),
    'lrformer': ('LRFormer', ('head.', )),
}
_SHOWN = 5


class ConversionReport(NamedTuple):
    """What :func:`convert_checkpoint` did.

    Attributes:
        state_dict (OrderedDict): The converted tensors.
        arch (str): The variant the backbone keys match.
        source (str): The wrapper the tensors came from (e.g. ``'state_dict_ema'``).
        renamed (list[tuple[str, str]]): ``(old, new)`` key pairs.
        dropped (list[str]): Keys left out (classifier).
    """
    state_dict: 'OrderedDict[str, torch.Tensor]'
    arch: str
    source: str
    renamed: List[Tuple[str, str]]
    dropped: List[str]


def _segnext_key(key: str) -> str:
    return key.replace('.mlp.dwconv.dwconv.', '.mlp.dwconv.')


def _variants(family: str) -> List[str]:
    from mmseg.registry import MODELS

    from . import models  # noqa: F401  (registers the backbones)
    return list(MODELS.get(FAMILIES[family][0]).arch_settings)


def _reference_shapes(family: str, arch: str) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of a variant's backbone (built on the meta device: no memory used)."""
    from mmseg.registry import MODELS

    extra = dict(norm_cfg=dict(type='BN')) if family == 'segnext' else {}
    with torch.device('meta'):
        model = MODELS.build(dict(type=FAMILIES[family][0], arch=arch, **extra))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _differences(tensors: Dict[str, torch.Tensor], reference: Dict[str, tuple]) -> List[str]:
    # Shape mismatches first: they tell the variant apart best.
    diffs = [f'{k}: file {tuple(v.shape)} vs {reference[k]}' for k, v in tensors.items()
             if k in reference and tuple(v.shape) != reference[k]]
    diffs += [f'missing {k}' for k in reference if k not in tensors]
    diffs += [f'unexpected {k}' for k in tensors if k not in reference]
    return diffs


def convert_checkpoint(family: str, checkpoint: str,
                       arch: Optional[str] = None) -> ConversionReport:
    """Convert an official checkpoint of ``family`` to the MMSeg 1.x / plugin layout.

    Args:
        family (str): ``'segnext'``, ``'segman'`` or ``'lrformer'``.
        checkpoint (str): Path or URL of the official file.
        arch (str, optional): The variant the file must be (``'t'``, ``'s'``, ...). Default:
            found from the file.

    Returns:
        ConversionReport: the converted tensors and what was renamed and dropped.

    Raises:
        CheckpointMismatchError: if the backbone keys match no variant of ``family`` (or not
            ``arch``); the message names the first differences to the closest variant.
    """
    if family not in FAMILIES:
        raise ValueError(f'family must be one of {sorted(FAMILIES)}, got {family!r}')
    _, classifier_prefixes = FAMILIES[family]
    found = read_state_dict(checkpoint)
    tensors = found.state_dict
    # Segmentation checkpoints: the backbone part is checked, the head is kept as it is.
    seg_prefix = 'backbone.' if any(k.startswith('backbone.') for k in tensors) else ''
    renamed, dropped, converted = [], [], OrderedDict()
    for key, value in tensors.items():
        inner = key[len(seg_prefix):] if seg_prefix and key.startswith(seg_prefix) else None
        if seg_prefix and inner is None:
            converted[key] = value  # decode_head.* etc.
            continue
        inner = key if inner is None else inner
        if not seg_prefix and inner.startswith(classifier_prefixes):
            dropped.append(key)
            continue
        new = seg_prefix + (_segnext_key(inner) if family == 'segnext' else inner)
        if new != key:
            renamed.append((key, new))
        converted[new] = value

    backbone = {k[len(seg_prefix):]: v for k, v in converted.items() if k.startswith(seg_prefix)}
    variants = _variants(family)
    if arch and arch not in variants:
        raise ValueError(f'{family} has no variant {arch!r}; choose from {sorted(variants)}')
    candidates = [arch] if arch else variants
    diffs = {a: _differences(backbone, _reference_shapes(family, a)) for a in candidates}
    matched = [a for a in candidates if not diffs[a]]
    if not matched:
        closest = min(candidates, key=lambda a: len(diffs[a]))
        shown = '; '.join(diffs[closest][:_SHOWN])
        raise CheckpointMismatchError(
            f'{checkpoint} is not a {family} checkpoint of variant '
            f'{arch or "any of " + "/".join(candidates)}: {len(diffs[closest])} differences to '
            f'{family}-{closest}, first: {shown}')
    return ConversionReport(converted, matched[0], found.source, renamed, dropped)


def describe(report: ConversionReport, checkpoint: str, family: str) -> str:
    """The summary the converter scripts print."""
    lines = [f'{checkpoint}: {family}-{report.arch} ({report.source}), '
             f'{len(report.state_dict)} tensors kept, {len(report.renamed)} renamed, '
             f'{len(report.dropped)} dropped']
    lines += [f'  renamed {old} -> {new}' for old, new in report.renamed[:_SHOWN]]
    if len(report.renamed) > _SHOWN:
        lines.append(f'  ... and {len(report.renamed) - _SHOWN} more renamed')
    lines += [f'  dropped {key}' for key in report.dropped]
    return '\n'.join(lines)


def save_converted(report: ConversionReport, path: str) -> None:
    """Write the converted tensors as ``{'state_dict': ...}`` (what mmengine loads)."""
    torch.save({'state_dict': report.state_dict}, path)


def main(family: str, argv: Optional[List[str]] = None) -> None:
    """Command line of ``tools/model_converters/<family>2mmseg.py``."""
    import argparse

    parser = argparse.ArgumentParser(
        description=f'Convert an official {family} checkpoint (ImageNet or segmentation) to '
        'the MMSeg 1.x / mmseg_segman layout, checking it against the variant it claims.')
    parser.add_argument('src', help='official checkpoint (path or URL)')
    parser.add_argument('dst', help='output file (.pth)')
    parser.add_argument('--arch', help='variant the file must be (default: found from the file)')
    args = parser.parse_args(argv)
    import os
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        parser.error('dst must differ from src (the original is kept)')
    report = convert_checkpoint(family, args.src, args.arch)
    save_converted(report, args.dst)
    print(describe(report, args.src, family))
    print(f'saved {args.dst}')
