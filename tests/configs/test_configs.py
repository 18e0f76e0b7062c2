"""Every config in configs/ loads, every ``type`` resolves, and the shared recipe is right.

Configs are globbed, so configs added later are covered without editing this file.
Models are built only for the toy configs and the smallest (``-t``) family variants.
"""
import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from config_helpers import strip_pretrained
from mmengine import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg import registry as R

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / 'configs'
# Segmentation configs; configs/imagenet (mmpretrain classification) is tested in
# tests/classification.
ALL_CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py') if 'imagenet' not in p.parts)
RUNNABLE = [p for p in ALL_CONFIGS if '_base_' not in p.parts]
NUM_CLASSES = {'ade20k': 150, 'cityscapes': 19, 'coco-stuff164k': 171, 'toy': 4,
               'custom': 2}  # custom: the template's two classes (configs/custom)

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
def test_config_loads_and_types_resolve(path, config_of):
    cfg = config_of(path)
    missing = []
    for key, value in cfg.items():
        if key in TOP_LEVEL:
            missing += unresolved_types(value, TOP_LEVEL[key], key)
    assert not missing, missing


@pytest.mark.parametrize('path', RUNNABLE, ids=config_id)
def test_runnable_config_is_complete(path, config_of):
    cfg = config_of(path)
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


SMALL = [p for p in RUNNABLE if p.parent.name == 'toy' or '-t_' in p.name]


@pytest.mark.parametrize('path', SMALL, ids=config_id)
def test_small_models_build_from_their_config(path, config_of):
    from mmengine.model import revert_sync_batchnorm

    cfg = config_of(path)
    model = revert_sync_batchnorm(R.MODELS.build(strip_pretrained(cfg.model)))
    assert sum(p.numel() for p in model.parameters()) > 0
    if path.parent.name == 'toy':
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 64, 64), mode='tensor')
        assert out.shape[:2] == (1, NUM_CLASSES['toy'])


# --------------------------------------------------------------------------------------
# The shared recipe of the papers (schedules/schedule_{160k,80k}.py)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('name, total', [
    pytest.param('schedule_160k', 160000, marks=pytest.mark.slow),  # 160k scheduler steps, ~3 s
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
    assert list(steps) == ['LoadCheckedImageFromFile', 'LoadCheckedAnnotations', 'RandomResize',
                           'RandomCrop', 'RandomFlip', 'PhotoMetricDistortion',
                           'PackSegInputs']
    assert steps['RandomResize']['scale'] == scale
    assert steps['RandomResize']['ratio_range'] == (0.5, 2.0)
    assert steps['RandomCrop']['crop_size'] == crop
    assert steps['RandomCrop']['cat_max_ratio'] == 0.75
    assert steps['LoadCheckedAnnotations'].get('reduce_zero_label', False) == (name == 'ade20k')
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


# --------------------------------------------------------------------------------------
# The family configs: structure, and the papers' recipes
# --------------------------------------------------------------------------------------
DATASETS = ('ade20k', 'cityscapes', 'coco-stuff164k')
# Per family: GPUs and images per GPU of the official launch (ADE20K, Cityscapes,
# COCO-Stuff), iterations, module types and norms, ImageNet weights file. SegNeXt B/L
# halve the images per GPU ('bl'). Sources: the official configs and training scripts
# (shared/reference/official-*.md); LRFormer's Cityscapes/COCO-Stuff recipes are the
# SegFormer protocol, as its docs say.
FAMILIES = {
    'segman': dict(
        gpus=4, per_gpu=(4, 2, 4), iters=(160000, 160000, 160000),
        backbone='SegMANEncoder', head='SegMANDecoder', in_index=[0, 1, 2, 3],
        norms=('SyncBN', 'SyncBN'), clip_grad=None,
        weights='pretrained/SegMAN_Encoder_{v}.pth.tar'),
    'segnext': dict(
        gpus=8, per_gpu=(8, 4, 8), per_gpu_bl=(4, 2, 4), iters=(160000, 160000, 80000),
        backbone='SegNeXtMSCAN', head='SegNeXtHamHead', in_index=[1, 2, 3],
        norms=('SyncBN', 'GN'), clip_grad=None, weights='pretrained/mscan_{v}.pth'),
    'lrformer': dict(
        gpus=8, per_gpu=(4, 1, 4), iters=(160000, 160000, 80000),
        backbone='LRFormer', head='LRHead', in_index=[1, 2, 3],
        norms=('BN', 'SyncBN'), clip_grad=dict(max_norm=35, norm_type=2),
        weights='pretrained/lrformer_{name}.pth'),
}
# Per family and variant: decoder in_channels and channels (ADE, City, COCO), extra head
# settings, drop path (ADE, City, COCO), parameters with 150 classes (the papers' or the
# official code's count, see docs/<family>.md).
VARIANTS = {
    ('segman', 't'): dict(in_channels=[32, 64, 144, 192], channels=(128, 128, 128),
                          head=dict(feat_proj_dim=192), drop_path=(0.0, 0.0, 0.0),
                          params=6.40e6),
    ('segman', 's'): dict(in_channels=[64, 144, 288, 512], channels=(144, 152, 144),
                          head=dict(feat_proj_dim=288), drop_path=(0.15, 0.2, 0.2),
                          params=29.43e6),
    ('segman', 'b'): dict(in_channels=[96, 160, 364, 560], channels=(180, 180, 180),
                          head=dict(feat_proj_dim=320), drop_path=(0.25, 0.25, 0.2),
                          params=51.80e6),
    # L: no official training script; the drop path is this project's choice.
    ('segman', 'l'): dict(in_channels=[96, 192, 432, 640], channels=(224, 224, 224),
                          head=dict(feat_proj_dim=432), drop_path=(0.3, 0.3, 0.25),
                          params=92.34e6),
    ('segnext', 't'): dict(in_channels=[64, 160, 256], channels=(256, ) * 3, rank=16,
                           drop_path=(0.1, ) * 3, params=4.26e6),
    ('segnext', 's'): dict(in_channels=[128, 320, 512], channels=(256, ) * 3, rank=16,
                           drop_path=(0.1, ) * 3, params=13.93e6),
    ('segnext', 'b'): dict(in_channels=[128, 320, 512], channels=(512, ) * 3, rank=64,
                           drop_path=(0.1, ) * 3, params=27.64e6),
    ('segnext', 'l'): dict(in_channels=[128, 320, 512], channels=(1024, ) * 3, rank=64,
                           drop_path=(0.3, ) * 3, params=48.93e6),
    ('lrformer', 't'): dict(in_channels=[96, 240, 384], channels=(256, ) * 3,
                            drop_path=(0.1, ) * 3, params=13.26e6, name='tiny'),
    ('lrformer', 's'): dict(in_channels=[128, 320, 512], channels=(384, ) * 3,
                            drop_path=(0.2, ) * 3, params=32.22e6, name='small'),
    ('lrformer', 'b'): dict(in_channels=[160, 400, 512], channels=(512, ) * 3,
                            drop_path=(0.4, ) * 3, params=67.5e6, name='base'),
    ('lrformer', 'l'): dict(in_channels=[192, 480, 640], channels=(640, ) * 3,
                            drop_path=(0.6, ) * 3, params=111.0e6, name='large'),
}
LEAVES = [(f, v, d) for (f, v) in VARIANTS for d in DATASETS]
SLIDE = dict(mode='slide', crop_size=(1024, 1024), stride=(768, 768))
FIRST_LINE = re.compile(r'# (\d+) (?:GPUs?|process(?:es)?) x (\d+) images? per '
                        r'(?:GPU|process) = (\d+) total, (\d+)(k?) iterations')


def leaf_id(leaf):
    return '{}-{}_{}'.format(*leaf)


def leaf_path(family, variant, dataset):
    return CONFIG_DIR / family / f'{family}-{variant}_{dataset}.py'


def top_level_assignments(path):
    """``{name: value node}`` of a config file's top-level assignments."""
    tree = ast.parse(path.read_text())
    return {node.targets[0].id: node.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}


def test_every_family_config_is_in_the_recipe_table():
    family_configs = {p for p in RUNNABLE if p.parent.name in FAMILIES}
    assert family_configs == {leaf_path(*leaf) for leaf in LEAVES}


@pytest.mark.parametrize('leaf', LEAVES, ids=leaf_id)
def test_leaf_inherits_its_sibling_and_states_only_differences(leaf):
    family, variant, dataset = leaf
    path = leaf_path(*leaf)
    assigned = top_level_assignments(path)
    base = ast.literal_eval(assigned['_base_'])
    if variant != 't':
        assert base == f'./{family}-t_{dataset}.py'
    else:
        data = 'cityscapes_1024x1024' if dataset == 'cityscapes' else dataset
        kiters = FAMILIES[family]['iters'][DATASETS.index(dataset)] // 1000
        assert base == [f'../_base_/models/{family}.py', f'../_base_/datasets/{data}.py',
                        '../_base_/default_runtime.py',
                        f'../_base_/schedules/schedule_{kiters}k.py']
    # custom_imports comes from default_runtime.py only.
    assert 'custom_imports' not in assigned
    # A T leaf restates none of the T settings the family's model base already holds.
    if variant == 't':
        backbone_keys = set()
        for call in ast.walk(assigned['model']):
            if isinstance(call, ast.keyword) and call.arg == 'backbone':
                backbone_keys = {k.arg for k in call.value.keywords}
        assert backbone_keys == {'init_cfg'}, backbone_keys


DEFAULT_HOOKS = [dict(type='CheckpointGuardHook'), dict(type='DataCheckHook'),
                 dict(type='BatchSizeCheckHook'), dict(type='RandomStateHook'),
                 dict(type='PlainParamGroupsHook')]


@pytest.mark.parametrize('leaf', LEAVES, ids=leaf_id)
def test_leaf_first_line_states_the_batch_and_schedule(leaf, config_of):
    family, variant, dataset = leaf
    path = leaf_path(*leaf)
    match = FIRST_LINE.fullmatch(path.read_text().splitlines()[0])
    assert match, (f'{path.name}: the first line must read '
                   f'"# N GPUs x B images per GPU = T total, Kk iterations"')
    gpus, per_gpu, total, iters = map(int, match.groups()[:4])
    cfg = config_of(path)
    assert gpus * per_gpu == total
    assert per_gpu == cfg.train_dataloader.batch_size
    assert iters * (1000 if match[5] else 1) == cfg.train_cfg.max_iters
    assert cfg.total_batch_size == total
    # Leaves state the total, never custom_hooks, so the base's hooks (batch check, exact
    # resume) stay on in every config.
    assert cfg.custom_hooks == DEFAULT_HOOKS


@pytest.mark.parametrize('path', [p for p in RUNNABLE if p.parent.name == 'toy'], ids=config_id)
def test_toy_first_line_states_the_batch(path, config_of):
    match = FIRST_LINE.match(path.read_text().splitlines()[0])
    assert match
    gpus, per_gpu, total, iters = map(int, match.groups()[:4])
    cfg = config_of(path)
    assert (gpus * per_gpu, per_gpu) == (total, cfg.train_dataloader.batch_size)
    assert iters * (1000 if match[5] else 1) == cfg.train_cfg.max_iters
    assert cfg.total_batch_size == total
    assert cfg.custom_hooks == DEFAULT_HOOKS


@pytest.mark.parametrize('leaf', LEAVES, ids=leaf_id)
def test_leaf_follows_the_papers_recipe(leaf, config_of):
    from mmseg_segman.models.decode_heads.segnext_head import parse_ham_kwargs

    family, variant, dataset = leaf
    fam, var = FAMILIES[family], VARIANTS[family, variant]
    d = DATASETS.index(dataset)
    cfg = config_of(leaf_path(*leaf))
    assert cfg.custom_imports == dict(imports=['mmseg_segman'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmseg'
    backbone, head = cfg.model.backbone, cfg.model.decode_head
    # encoder
    assert (backbone.type, backbone.arch) == (fam['backbone'], variant)
    assert backbone.drop_path_rate == var['drop_path'][d]
    assert backbone.norm_cfg.type == fam['norms'][0]
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=fam['weights'].format(
        v=variant, name=var.get('name')))
    # decoder
    assert head.type == fam['head'] and head.in_index == fam['in_index']
    assert head.in_channels == var['in_channels'] and head.channels == var['channels'][d]
    assert head.norm_cfg.type == fam['norms'][1]
    assert head.num_classes == (150, 19, 171)[d]
    assert head.dropout_ratio == 0.1 and head.align_corners is False
    for key, value in var.get('head', {}).items():
        assert head[key] == value, key
    if family == 'segnext':
        assert head.ham_channels == head.channels
        assert parse_ham_kwargs(head.ham_kwargs, head.channels)['rank'] == var['rank']
    # data: crop, batch, test mode and resizing
    crop = 1024 if dataset == 'cityscapes' else 640 if leaf == ('lrformer', 'l', 'ade20k') else 512
    assert cfg.crop_size == (crop, crop) and cfg.model.data_preprocessor.size == (crop, crop)
    crops = [t['crop_size'] for t in cfg.train_dataloader.dataset.pipeline
             if t['type'] == 'RandomCrop']
    assert crops == [(crop, crop)]
    per_gpu = fam.get('per_gpu_bl', fam['per_gpu']) if variant in 'bl' else fam['per_gpu']
    assert cfg.train_dataloader.batch_size == per_gpu[d]
    total = fam['gpus'] * per_gpu[d]
    assert cfg.total_batch_size == total
    official_whole = leaf == ('segman', 'l', 'cityscapes')  # the official L config tests whole
    if dataset == 'cityscapes' and not official_whole:
        assert cfg.model.test_cfg == SLIDE
    else:
        assert cfg.model.test_cfg == dict(mode='whole')
    test_steps = cfg.test_dataloader.dataset.pipeline
    test_types = [t['type'] for t in test_steps]
    scale = next(t['scale'] for t in test_steps if t['type'] == 'Resize')
    if dataset == 'cityscapes':
        assert 'ResizeToMultiple' not in test_types and scale == (2048, 1024)
    else:  # whole images resized to multiples of 32 (all three official codes)
        assert test_types.index('ResizeToMultiple') == test_types.index('Resize') + 1
        assert scale == (4 * crop, crop)
    # schedule and optimiser
    iters = fam['iters'][d]
    assert cfg.train_cfg.max_iters == iters and cfg.param_scheduler[-1].end == iters
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                                               weight_decay=0.01)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.head.lr_mult == 10.
    assert cfg.optim_wrapper.get('clip_grad') == fam['clip_grad']


@pytest.mark.parametrize('family_variant', list(VARIANTS), ids='-'.join)
def test_parameter_count_matches_the_paper(family_variant, meta_model_of):
    family, variant = family_variant
    model = meta_model_of(leaf_path(family, variant, 'ade20k'))  # shapes only
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / VARIANTS[family_variant]['params'] - 1) <= 0.005, count


def test_only_default_runtime_sets_custom_imports():
    setters = [p for p in ALL_CONFIGS if 'custom_imports' in top_level_assignments(p)]
    assert setters == [CONFIG_DIR / '_base_' / 'default_runtime.py']


def test_all_weights_live_in_one_folder(config_of):
    for family, variant, dataset in LEAVES:
        cfg = config_of(leaf_path(family, variant, dataset))
        assert cfg.model.backbone.init_cfg.checkpoint.startswith('pretrained/')


@pytest.mark.parametrize('path', RUNNABLE, ids=config_id)
def test_every_pipeline_checks_its_annotations(path, config_of):
    """No config loads images or annotations unchecked (the checked loaders name the bad
    file), and every runtime switches the plugin's run behaviours on."""
    cfg = config_of(path)
    text = repr(cfg.to_dict())  # every string quoted, as pretty_text (without its yapf pass)
    assert "'LoadAnnotations'" not in text and 'LoadCheckedAnnotations' in text
    # Training loads images through the checked loader; test pipelines keep MMSeg's
    # LoadImageFromFile, which MMSeg's inferencer looks up by name (and swaps for an
    # in-memory loader).
    assert cfg.train_dataloader.dataset.pipeline[0]['type'] == 'LoadCheckedImageFromFile'
    assert cfg.test_dataloader.dataset.pipeline[0]['type'] == 'LoadImageFromFile'
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert {'CheckpointGuardHook', 'DataCheckHook', 'RandomStateHook'} <= set(hooks)
    assert cfg.model_wrapper_cfg.type == 'mmseg.CPUAwareDistributedDataParallel'
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')
