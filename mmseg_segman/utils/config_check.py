"""Unknown registry types in a config, found before anything is built.

A misspelled ``type`` (``SegMANEncodr``) otherwise fails deep inside the Runner, after
MMEngine has printed the whole config; :func:`check_registry_types` names the config key,
the unknown type and the closest registered names.
"""
import difflib
from typing import Any, Iterator, List, Tuple

from ..errors import UnknownTypeError

__all__ = ['UnknownTypeError', 'check_registry_types', 'registered_names']


def registered_names(registry: Any) -> List[str]:
    """Every name ``registry`` can build: its own, its ancestors' and its descendants'."""
    names = set()
    root = registry
    while root is not None:
        names.update(root.module_dict)
        root = root.parent
    stack = [registry]
    while stack:
        reg = stack.pop()
        names.update(reg.module_dict)
        stack.extend(reg._children.values())
    return sorted(names)


def _typed_nodes(node: Any, key: str) -> Iterator[Tuple[str, str]]:
    """(config key, type name) of every dict with a string ``type`` below ``node``."""
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield f'{key}.type', node['type']
        for k, v in node.items():
            # init_cfg types live in WEIGHT_INITIALIZERS, not in the node's registry.
            if k not in ('type', 'init_cfg'):
                yield from _typed_nodes(v, f'{key}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _typed_nodes(v, f'{key}.{i}')


def _sections(cfg: Any) -> Iterator[Tuple[str, Any, Any]]:
    """(config key, node, registry) of the parts whose types are checked."""
    from mmseg import registry as mmseg_registry

    yield 'model', cfg.get('model'), mmseg_registry.MODELS
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if isinstance(loader, dict) and isinstance(loader.get('dataset'), dict):
            dataset = dict(loader['dataset'])
            pipeline = dataset.pop('pipeline', None)
            yield f'{split}_dataloader.dataset', {k: v for k, v in dataset.items()
                                                  if k != 'dataset'}, mmseg_registry.DATASETS
            if pipeline is not None:
                yield f'{split}_dataloader.dataset.pipeline', pipeline, \
                    mmseg_registry.TRANSFORMS
    yield 'custom_hooks', cfg.get('custom_hooks'), mmseg_registry.HOOKS


def check_registry_types(cfg: Any) -> None:
    """Raise :class:`UnknownTypeError` for the first ``type`` no registry knows.

    Checked: ``model``, each dataloader's dataset and pipeline, ``custom_hooks``; in the
    config's ``default_scope`` (``mmseg`` by default). Types given as classes pass.

    Args:
        cfg (mmengine.Config): The config (after ``--cfg-options``).

    Raises:
        UnknownTypeError: naming the key, the type and the closest registered names.
    """
    from mmengine.registry import DefaultScope, init_default_scope

    scope = cfg.get('default_scope', 'mmseg')
    if DefaultScope.get_current_instance() is None:
        init_default_scope(scope)
    for section, node, registry in _sections(cfg):
        for key, type_name in _typed_nodes(node, section):
            if registry.get(type_name) is not None:
                continue
            close = difflib.get_close_matches(type_name.split('.')[-1],
                                              registered_names(registry), n=3, cutoff=0.6)
            suggestion = (f'did you mean {" or ".join(close)}?' if close else
                          'check the spelling and that the module defining it is imported '
                          '(custom_imports)')
            raise UnknownTypeError(
                f'{key}: unknown type {type_name!r} (not in the {registry.name} registry of '
                f'scope {scope!r}); {suggestion}')
