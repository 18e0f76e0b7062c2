"""Every config in configs/ loads, every ``type`` resolves, and the shared recipe is right.

Configs are globbed, so configs added later are covered without editing this file.
Models are built only for the toy configs and the smallest (``-t``) family variants.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg import registry as R

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / 'configs'
ALL_CONFIGS = sorted(CONFIG_DIR.rglob('*.py'))
RUNNABLE = [p for p in ALL_CONFIGS if '_base_' not in p.parts]
NUM_CLASSES = {'ade20k': 150, 'cityscapes': 19, 'coco-stuff164k': 171, 'toy': 4}

# The registry a `type` under each top-level key belongs to.
TOP_LEVEL = {
    'model': R.MODELS, 'tta_model': R.MODELS, 'model_wrapper_cfg': R.MODEL_WRAPPERS,
    'train_dataloader': None, 'val_dataloader': None, 'test_dataloader': None,
    'train_pipeline': R.TRANSFORMS, 'test_pipeline': R.TRANSFORMS,
    'tta_pipeline': R.TRANSFORMS, 'val_evaluator': R.METRICS,
    'test_evaluator': R.METRICS, 'optim_wrapper': R.OPTIM_WRAPPERS,
    'param_scheduler': R.PARAM_SCHEDULERS, 'train_cfg': R.LOOPS, 'val_cfg': R.LOOPS,
    'test_cfg': R.LOOPS, 'default_hooks': R.HOOKS, 'custom_hooks': R.HOOKS,
    'visualizer': R.VISUALIZERS, 'vis_backends': R.VISBACKENDS,
}
# Keys whose value switches registry wherever they appear.
BY_KEY = {
    'init_cfg': R.WEIGHT_INITIALIZERS, 'dataset': R.DATASETS,
    'pipeline': R.TRANSFORMS, 'transforms': R.TRANSFORMS,
    'optimizer': R.OPTIMIZERS, 'vis_backends': R.VISBACKENDS,
}


def config_id(path):
    return str(path.relative_to(CONFIG_DIR))


def unresolved_types(node, registry, where):
    """Paths of every ``type`` under ``node`` that ``registry`` cannot find."""
    missing = []
    if isinstance(node, dict):
        if 'type' in node and isinstance(node['type'], str):
            if registry is None or registry.get(node['type']) is None:
                missing.append(f"{where}: {node['type']}")
        for key, value in node.items():
            sub = BY_KEY.get(key, registry)
            if key == 'sampler':  # a data sampler, or a pixel sampler inside a model
                sub = R.TASK_UTILS if registry is R.MODELS else R.DATA_SAMPLERS
            missing += unresolved_types(value, sub, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            missing += unresolved_types(value, registry, f'{where}[{i}]')
    return missing


def dataset_of(path):
    return next((name for name in NUM_CLASSES if path.stem.endswith(name)), None)


@pytest.fixture(autouse=True, scope='module')
def mmseg_scope():
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    init_default_scope('mmseg')


def test_configs_exist():
    assert any(p.parent.name == 'toy' for p in RUNNABLE)
    assert (CONFIG_DIR / '_base_' / 'default_runtime.py') in ALL_CONFIGS


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=config_id)
def test_config_loads_and_types_resolve(path):
    cfg = Config.fromfile(str(path))
    missing = []
    for key, value in cfg.items():
        if key in TOP_LEVEL:
            missing += unresolved_types(value, TOP_LEVEL[key], key)
    assert not missing, missing


@pytest.mark.parametrize('path', RUNNABLE, ids=config_id)
def test_runnable_config_is_complete(path):
    cfg = Config.fromfile(str(path))
    for key in ('model', 'train_dataloader', 'val_dataloader', 'test_dataloader',
                'val_evaluator', 'optim_wrapper', 'param_scheduler', 'train_cfg',
                'default_hooks'):
        assert key in cfg, f'{config_id(path)} has no {key}'
    assert 'mmseg_segman' in cfg.custom_imports['imports']
    assert cfg.default_scope == 'mmseg'
    dataset = dataset_of(path)
    assert dataset, f'{config_id(path)}: name must end with one of {list(NUM_CLASSES)}'
    heads = [cfg.model.decode_head]
    aux = cfg.model.get('auxiliary_head')
    heads += aux if isinstance(aux, list) else [aux] if aux else []
    for head in heads:
        assert head.num_classes == NUM_CLASSES[dataset], config_id(path)
    # The last poly phase ends where training ends.
    assert cfg.param_scheduler[-1]['end'] == cfg.train_cfg.max_iters


def _strip_pretrained(model_cfg):
    """Drop init_cfg=Pretrained entries: a test must not download weights."""
    if isinstance(model_cfg, dict):
        return {k: _strip_pretrained(v) for k, v in model_cfg.items()
                if not (k == 'init_cfg' and isinstance(v, dict)
                        and v.get('type') == 'Pretrained')}
    if isinstance(model_cfg, list):
        return [_strip_pretrained(v) for v in model_cfg]
    return model_cfg


SMALL = [p for p in RUNNABLE if p.parent.name == 'toy' or '-t_' in p.name]


@pytest.mark.parametrize('path', SMALL, ids=config_id)
def test_small_models_build_from_their_config(path):
    from mmengine.model import revert_sync_batchnorm

    cfg = Config.fromfile(str(path))
    model = revert_sync_batchnorm(R.MODELS.build(_strip_pretrained(cfg.model)))
    assert sum(p.numel() for p in model.parameters()) > 0
    if path.parent.name == 'toy':
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 64, 64), mode='tensor')
        assert out.shape[:2] == (1, NUM_CLASSES['toy'])


# --------------------------------------------------------------------------------------
# The shared recipe of the papers (schedules/schedule_{160k,80k}.py)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('name, total', [('schedule_160k', 160000),
                                         ('schedule_80k', 80000)])
def test_lr_schedule_is_warmup_then_linear_decay(name, total):
    cfg = Config.fromfile(str(CONFIG_DIR / '_base_' / 'schedules' / f'{name}.py'))
    assert cfg.train_cfg.max_iters == total
    optim = build_optim_wrapper(torch.nn.Linear(1, 1), cfg.optim_wrapper)
    schedulers = [R.PARAM_SCHEDULERS.build(dict(s, optimizer=optim))
                  for s in cfg.param_scheduler]
    lrs = np.empty(total)
    for it in range(total):
        lrs[it] = optim.param_groups[0]['lr']
        for scheduler in schedulers:
            scheduler.step()
    # Independent closed form: linear warm-up from 6e-5 * 1e-6 reaching 6e-5 at
    # iteration 1499, then a straight line to 0 at the last iteration.
    it = np.arange(total)
    warm = 6e-5 * (1e-6 + (1 - 1e-6) * np.minimum(it, 1499) / 1499)
    decay = 6e-5 * (1 - (it - 1500) / (total - 1500 - 1))
    expected = np.where(it < 1500, warm, decay)
    np.testing.assert_allclose(lrs, expected, rtol=1e-6, atol=1e-15)


def test_paramwise_rules_match_the_official_recipe():
    cfg = Config.fromfile(str(CONFIG_DIR / '_base_' / 'schedules' / 'schedule_160k.py'))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.ModuleDict(dict(
                conv=torch.nn.Conv2d(1, 1, 1), norm1=torch.nn.LayerNorm(1),
                pos_block=torch.nn.Conv2d(1, 1, 1), bn=torch.nn.BatchNorm2d(1)))
            self.decode_head = torch.nn.ModuleDict(dict(
                conv=torch.nn.Conv2d(1, 1, 1), norm=torch.nn.GroupNorm(1, 1)))

    net = Net()
    optim = build_optim_wrapper(net, cfg.optim_wrapper).optimizer
    assert isinstance(optim, torch.optim.AdamW)
    assert optim.defaults['betas'] == (0.9, 0.999)
    names = {id(p): n for n, p in net.named_parameters()}
    got = {names[id(g['params'][0])]: (g['lr'], g['weight_decay'])
           for g in optim.param_groups}
    expected = {
        'backbone.conv.weight': (6e-5, 0.01),
        'backbone.norm1.weight': (6e-5, 0.0),
        'backbone.pos_block.weight': (6e-5, 0.0),
        'backbone.bn.weight': (6e-5, 0.01),  # `norm` does not catch `bn` (as in mmcv)
        'decode_head.conv.weight': (6e-4, 0.01),
        'decode_head.norm.weight': (6e-4, 0.01),  # `head` matches before `norm`
    }
    for name, (lr, wd) in expected.items():
        assert got[name] == pytest.approx((lr, wd)), name


@pytest.mark.parametrize('name, classes, crop, scale', [
    ('ade20k', 150, (512, 512), (2048, 512)),
    ('cityscapes_1024x1024', 19, (1024, 1024), (2048, 1024)),
    ('coco-stuff164k', 171, (512, 512), (2048, 512)),
])
def test_dataset_bases_follow_the_papers(name, classes, crop, scale):
    cfg = Config.fromfile(str(CONFIG_DIR / '_base_' / 'datasets' / f'{name}.py'))
    dataset_cls = R.DATASETS.get(cfg.train_dataloader.dataset.type)
    assert len(dataset_cls.METAINFO['classes']) == classes
    steps = {t['type']: t for t in cfg.train_pipeline}
    assert list(steps) == ['LoadImageFromFile', 'LoadAnnotations', 'RandomResize',
                           'RandomCrop', 'RandomFlip', 'PhotoMetricDistortion',
                           'PackSegInputs']
    assert steps['RandomResize']['scale'] == scale
    assert steps['RandomResize']['ratio_range'] == (0.5, 2.0)
    assert steps['RandomCrop']['crop_size'] == crop
    assert steps['RandomCrop']['cat_max_ratio'] == 0.75
    assert steps['LoadAnnotations'].get('reduce_zero_label', False) == (name == 'ade20k')
    test_steps = {t['type']: t for t in cfg.test_pipeline}
    assert test_steps['Resize'] == dict(type='Resize', scale=scale, keep_ratio=True)
    # ADE20K/COCO-Stuff test at whole images resized to multiples of 32 (all three official
    # codes); Cityscapes at full resolution with sliding windows.
    test_types = [t['type'] for t in cfg.test_pipeline]
    if name == 'cityscapes_1024x1024':
        assert 'ResizeToMultiple' not in test_types
    else:
        assert test_types.index('ResizeToMultiple') == test_types.index('Resize') + 1
        assert test_steps['ResizeToMultiple']['size_divisor'] == 32
