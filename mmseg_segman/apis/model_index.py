"""The plugin's model index (``model-index.yml`` and ``configs/*/metafile.yml``) and scope.

The index lives at the repository root in a checkout and under ``mmseg_segman/.mim`` in an
installed package (MMSeg's layout, which MMEngine and openmim read).
"""
import os.path as osp
from typing import Dict, Iterator, List, Optional

from mmengine.config.utils import MODULE2PACKAGE
from mmengine.infer import BaseInferencer

SCOPE = 'mmseg_segman'

__all__ = ['SCOPE', 'register_config_scope', 'index_root', 'iter_models', 'list_models',
           'find_model']


def register_config_scope() -> None:
    """Let MMEngine resolve ``mmseg_segman::<family>/<config>.py`` bases and model names.

    MMEngine only accepts the scopes listed in its ``MODULE2PACKAGE``; the value is the
    name it looks the installed package up by. The module name works both for an install
    (distribution names are normalised) and for a checkout on ``sys.path``.
    """
    MODULE2PACKAGE.setdefault(SCOPE, SCOPE)


def index_root() -> str:
    """The directory holding ``model-index.yml`` and ``configs/`` (checkout or ``.mim``)."""
    register_config_scope()
    return BaseInferencer._get_repo_or_mim_dir(SCOPE)


def iter_models(root: Optional[str] = None) -> Iterator[Dict]:
    """Yield every model entry of the index, as read from the metafiles.

    Args:
        root (str, optional): Directory of ``model-index.yml``. Defaults to
            :func:`index_root`.
    """
    root = root or index_root()
    if not osp.isfile(osp.join(root, 'model-index.yml')):
        raise FileNotFoundError(
            f'{osp.join(root, "model-index.yml")} is missing: this mmseg_segman install '
            f'has no model index; reinstall the package (pip install .) or run from a '
            f'checkout of the repository')
    yield from BaseInferencer._get_models_from_metafile(root)


def list_models() -> List[str]:
    """Names of every model in the index (the config stems, e.g. ``segman-t_ade20k``)."""
    return [entry['Name'] for entry in iter_models()]


def find_model(name: str) -> Optional[Dict]:
    """The index entry named ``name`` (case-insensitive; aliases count), or None."""
    name = name.lower()
    for entry in iter_models():
        aliases = entry.get('Alias', [])
        aliases = [aliases] if isinstance(aliases, str) else aliases
        if name == entry['Name'].lower() or name in (a.lower() for a in aliases):
            return entry
    return None
