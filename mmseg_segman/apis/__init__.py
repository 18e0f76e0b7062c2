"""Inference: strict ``init_model``, the inferencer by model name, the model index."""
from .inference import init_model
from .inferencer import MMSegInferencer, dataset_meta_from_config
from .model_index import SCOPE, find_model, index_root, list_models, register_config_scope

register_config_scope()

__all__ = ['MMSegInferencer', 'SCOPE', 'dataset_meta_from_config', 'find_model',
           'index_root', 'init_model', 'list_models', 'register_config_scope']
