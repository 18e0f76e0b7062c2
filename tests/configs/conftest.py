"""Fixtures shared by the config tests: each packaged config parsed once, and its model
built once on the meta device, per session.

Several files here check the same configs (the recipe, the model index, ``--tta``).
Parsing a config with its bases takes about 0.1 s and building its model on the meta
device 0.2-0.6 s on the project's 2-vCPU VM. Measured there (one run each, one after the
other, quiet), `pytest -q -m "not slow" tests/configs`: 56 s in pytest with every test
parsing and building its own (d7362e8), 32 s with these fixtures.
"""
import copy
from pathlib import Path
from typing import Callable

import pytest
import torch
from config_helpers import strip_pretrained
from mmengine import Config
from torch import nn


@pytest.fixture(scope='session')
def config_of() -> Callable[[Path], Config]:
    """``config_of(path)``: the parsed config, a deep copy of the session's one parse (so a
    test may change its copy)."""
    parsed = {}

    def get(path) -> Config:
        key = Path(path).resolve()
        if key not in parsed:
            parsed[key] = Config.fromfile(str(key))
        return copy.deepcopy(parsed[key])

    return get


@pytest.fixture(scope='session')
def meta_model_of(config_of) -> Callable[[Path], nn.Module]:
    """``meta_model_of(path)``: the config's ``model`` without pretrained weights, built on
    the meta device (shapes only), once per session. Shared between tests: read only."""
    from mmseg.registry import MODELS

    built = {}

    def get(path) -> nn.Module:
        key = Path(path).resolve()
        if key not in built:
            with torch.device('meta'):
                built[key] = MODELS.build(strip_pretrained(config_of(key).model.to_dict()))
        return built[key]

    return get
