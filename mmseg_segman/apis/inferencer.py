"""MMSeg's inferencer, with this plugin's model names."""
import os.path as osp
import warnings
from typing import List, Optional, Tuple, Union

import torch.nn as nn
from mmengine.config import Config
from mmseg.apis import MMSegInferencer as _MMSegInferencer
from mmseg.registry import DATASETS
from mmseg.utils import ConfigType

from ..utils.checkpoint_io import weights_only_checkpoints
from .inference import check_loaded_checkpoint
from .model_index import find_model, index_root

__all__ = ['MMSegInferencer', 'dataset_meta_from_config']


class MMSegInferencer(_MMSegInferencer):
    """:class:`mmseg.apis.MMSegInferencer` that also finds the models of ``mmseg_segman``.

    ``model`` may be a name from this plugin's model index (``model-index.yml``; the
    config stems, e.g. ``'segman-t_ade20k'``), a name from MMSeg's own index, a config
    path or a config object. Everything else (arguments, calling, visualisation) is
    MMSeg's.

    The authors publish their trained weights on Google Drive, Tsinghua Cloud and
    Hugging Face pages that cannot be downloaded unattended, so a model name never
    downloads anything: pass the downloaded checkpoint as ``weights``. Without
    ``weights`` the model has random weights (a warning says so and names the page of
    the authors' checkpoint); classes and palette then come from the config's dataset.

    Args:
        model (str, dict, Config): Model name, config path or config.
        weights (str, optional): Checkpoint path or URL. Defaults to None.
        classes (list, optional): Class names for rendering. Defaults to those of the
            checkpoint, else of the config's dataset.
        palette (list, optional): Palette for rendering, as ``classes``.
        dataset_name (str, optional): MMSeg dataset name whose classes and palette to
            use for rendering.
        device (str, optional): ``'cpu'``, ``'cuda:0'``...; None picks one.
        scope (str): Registry scope the model is built in. Defaults to ``'mmseg'``.
        strict_load (bool): Refuse ``weights`` that do not fit the model exactly (another
            class count, family or variant), naming the keys, as ``init_model`` does.
            False loads the matching weights only. Defaults to True.

    ``weights`` are read weights-only: a file that would run code is refused.
    """

    def __init__(self,
                 model: Union[ConfigType, str],
                 weights: Optional[str] = None,
                 classes: Optional[Union[str, List]] = None,
                 palette: Optional[Union[str, List]] = None,
                 dataset_name: Optional[str] = None,
                 device: Optional[str] = None,
                 scope: Optional[str] = 'mmseg',
                 strict_load: bool = True) -> None:
        self.strict_load = strict_load
        self._weights = weights
        with weights_only_checkpoints():
            super().__init__(model=model, weights=weights, classes=classes, palette=palette,
                             dataset_name=dataset_name, device=device, scope=scope)

    def _load_model_from_metafile(self, model: str) -> Tuple[Config, Optional[str]]:
        entry = find_model(model)
        if entry is None:
            try:  # one of MMSeg's own model names
                return super()._load_model_from_metafile(model)
            except ValueError:
                raise ValueError(
                    f'{model!r} is neither a config file nor a model name of '
                    f'mmseg_segman or MMSeg; mmseg_segman names are the config stems, '
                    f'e.g. segman-t_ade20k (see mmseg_segman.apis.list_models())') from None
        cfg = Config.fromfile(osp.join(index_root(), entry['Config']))
        self._published_weights = (entry['Name'], entry.get('Weights'))
        return cfg, None

    def _load_weights_to_model(self, model: nn.Module, checkpoint: Optional[dict],
                               cfg: Optional[ConfigType]) -> None:
        if checkpoint is not None:
            if self.strict_load:
                check_loaded_checkpoint(model, checkpoint, str(self._weights),
                                        what='use it (strict_load=False)')
            super()._load_weights_to_model(model, checkpoint, cfg)
            return
        name, url = getattr(self, '_published_weights', (None, None))
        where = (f' The authors publish trained weights for {name} at {url}: download '
                 f'them and pass weights=<file>.' if url else '')
        warnings.warn(f'No weights given (weights=None): the model has random weights and '
                      f'its predictions are meaningless.{where}', stacklevel=4)
        model.dataset_meta = dataset_meta_from_config(cfg)



def dataset_meta_from_config(cfg: Optional[ConfigType]) -> dict:
    """Classes and palette of a config's test dataset, for models without a checkpoint.

    MMSeg's inferencer and ``init_model`` fall back to Cityscapes' (or to nothing) when no
    checkpoint carries them; the config's dataset is the better guess.

    Args:
        cfg (Config, optional): A config with ``test_dataloader.dataset``.

    Returns:
        dict: ``classes`` and ``palette``; Cityscapes' if the config names no dataset.
    """
    from mmseg.utils import get_classes, get_palette

    try:
        dataset = cfg.test_dataloader.dataset
        metainfo = dataset.get('metainfo') or DATASETS.get(dataset.type).METAINFO
        return dict(classes=tuple(metainfo['classes']), palette=list(metainfo['palette']))
    except (AttributeError, KeyError, TypeError):
        return dict(classes=get_classes('cityscapes'), palette=get_palette('cityscapes'))
