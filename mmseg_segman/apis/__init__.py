"""Inference by model name and the plugin's model index."""
from .inferencer import MMSegInferencer, dataset_meta_from_config
from .model_index import SCOPE, find_model, index_root, list_models, register_config_scope

register_config_scope()

__all__ = ['MMSegInferencer', 'SCOPE', 'dataset_meta_from_config', 'find_model',
           'index_root', 'list_models', 'register_config_scope']
