"""PlainParamGroupsHook: plain-dict optimizer groups only for runs that compile."""
from pathlib import Path
from types import SimpleNamespace

import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import build_optim_wrapper

from mmseg_segman.engine import PlainParamGroupsHook

REPO_ROOT = Path(__file__).resolve().parents[2]


def _optim_wrapper():
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'toy' / 'segman-t_toy.py'))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    return build_optim_wrapper(model, cfg.optim_wrapper)


def test_groups_become_plain_dicts_when_compiling():
    wrapper = _optim_wrapper()
    before = [dict(g) for g in wrapper.optimizer.param_groups]
    # The defect the hook works around: MMEngine hands over ConfigDict groups.
    assert any(isinstance(g, ConfigDict) for g in wrapper.optimizer.param_groups)
    PlainParamGroupsHook().before_train(
        SimpleNamespace(cfg=Config(dict(compile=True)), optim_wrapper=wrapper))
    groups = wrapper.optimizer.param_groups
    assert all(type(g) is dict for g in groups)
    assert len(groups) == len(before)
    for group, old in zip(groups, before):
        assert group.keys() == old.keys()
        assert all(p is q for p, q in zip(group['params'], old['params']))
        assert {k: v for k, v in group.items() if k != 'params'} == \
            {k: v for k, v in old.items() if k != 'params'}


def test_nothing_changes_without_compile():
    wrapper = _optim_wrapper()
    groups = list(wrapper.optimizer.param_groups)
    PlainParamGroupsHook().before_train(
        SimpleNamespace(cfg=Config(dict()), optim_wrapper=wrapper))
    assert all(a is b for a, b in zip(wrapper.optimizer.param_groups, groups))
