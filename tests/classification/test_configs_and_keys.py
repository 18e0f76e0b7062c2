"""configs/imagenet: every config builds its classifier, the recipe numbers are the official
scripts', and the classifiers' keys are those of the official ImageNet models."""
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from conftest import CONFIG_DIR, FAMILIES
from mmengine import Config

from mmseg_segman.utils.checkpoint import CheckpointMismatchError

ALL_CONFIGS = sorted(CONFIG_DIR.glob('*_in1k.py'))

# From the official training scripts and their timm/DeiT defaults (see the config comments):
# GPUs x images per GPU, lr at that total batch, warm-up epochs, epochs run, drop path,
# evaluation crop_pct, EMA decay (None: no EMA), gradient clipping.
RECIPE = {
    'segman-t': (8, 512, 4e-3, 5, 310, 0.0, 0.9, 0.99984, 5.0),
    'segman-s': (8, 256, 2e-3, 5, 310, 0.15, 0.9, 0.99984, 5.0),
    'segman-b': (8, 256, 2e-3, 5, 310, 0.3, 0.95, 0.99984, 5.0),
    'segman-l': (8, 256, 2e-3, 5, 310, 0.3, 0.95, 0.99984, 5.0),  # B's script (no L one)
    'segnext-t': (8, 128, 1e-3, 5, 310, 0.1, 0.9, None, None),
    'segnext-s': (8, 128, 1e-3, 5, 310, 0.1, 0.9, None, None),
    'segnext-b': (8, 128, 1e-3, 5, 310, 0.1, 0.9, None, None),
    'segnext-l': (8, 128, 1e-3, 5, 310, 0.2, 0.9, None, None),
    'lrformer-t': (8, 128, 1e-3, 20, 300, 0.1, 0.875, None, None),
    'lrformer-s': (8, 128, 1e-3, 20, 300, 0.1, 0.875, None, None),
    'lrformer-b': (8, 128, 1e-3, 20, 300, 0.3, 0.875, None, None),
    'lrformer-l': (8, 128, 1e-3, 20, 300, 0.3, 0.875, None, None),
}
ENCODER = {'segman': 'SegMANEncoder', 'segnext': 'SegNeXtMSCAN', 'lrformer': 'LRFormer'}


def build(cfg_or_path, **cfg_options):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile(str(cfg_or_path)) if not isinstance(cfg_or_path, Config) \
        else cfg_or_path
    cfg.merge_from_dict(cfg_options)
    init_default_scope('mmpretrain')
    return MODELS.build(cfg.model)


def test_every_variant_has_a_config():
    assert sorted(p.stem for p in ALL_CONFIGS) == sorted(f'{n}_in1k' for n in RECIPE)


@pytest.mark.parametrize('name', sorted(RECIPE))
def test_recipe_numbers_are_the_official_ones(name):
    gpus, per_gpu, lr, warmup, epochs, drop_path, crop_pct, ema, clip = RECIPE[name]
    cfg = Config.fromfile(str(CONFIG_DIR / f'{name}_in1k.py'))
    family = name.split('-')[0]
    assert cfg.model.backbone.type == ENCODER[family]
    assert cfg.model.backbone.arch == name.split('-')[1]
    assert cfg.train_dataloader.batch_size == per_gpu
    # The lr mmengine trains with at the official total batch (auto_scale_lr when enabled).
    scale = cfg.auto_scale_lr
    actual_lr = cfg.optim_wrapper.optimizer.lr * (
        gpus * per_gpu / scale.base_batch_size if scale.get('enable') else 1)
    assert actual_lr == pytest.approx(lr)
    warm, cosine = cfg.param_scheduler
    assert (warm.type, warm.end, cosine.begin, cosine.end) == ('LinearLR', warmup, warmup, 300)
    assert warm.start_factor * lr == pytest.approx(1e-6)  # timm's --warmup-lr
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    # timm's evaluation resize: floor(224 / crop_pct), then the centre 224.
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        resize, crop = loader.dataset.pipeline[1:3]
        assert resize.scale == math.floor(224 / crop_pct) and crop.crop_size == 224
    hooks = [h for h in cfg.get('custom_hooks', []) if h.type == 'EMAHook']
    assert [1 - h.momentum for h in hooks] == pytest.approx([ema] if ema else [])
    assert cfg.optim_wrapper.get('clip_grad', {}).get('max_norm') == clip
    # Mixup 0.8 / CutMix 1.0 and label smoothing 0.1 in all three recipes.
    assert [(a.type, a.alpha) for a in cfg.model.train_cfg.augments] == [('Mixup', 0.8),
                                                                           ('CutMix', 1.0)]
    assert cfg.model.head.loss.label_smooth_val == 0.1
    randaug = cfg.train_dataloader.dataset.pipeline[3]
    assert (randaug.type, randaug.magnitude_level, randaug.magnitude_std) == ('RandAugment', 9,
                                                                             0.5)
    assert cfg.train_dataloader.dataset.pipeline[4].erase_prob == 0.25


@pytest.mark.parametrize('family', FAMILIES)
def test_t_classifier_builds_from_its_config(family):
    from mmpretrain.models import ImageClassifier

    from mmseg_segman.models.backbones import LRFormer, SegMANEncoder, SegNeXtMSCAN

    model = build(CONFIG_DIR / f'{family}-t_in1k.py')
    assert isinstance(model, ImageClassifier) and model.neck is None
    encoder = {'segman': SegMANEncoder, 'segnext': SegNeXtMSCAN, 'lrformer': LRFormer}[family]
    assert type(model.backbone) is encoder
    # Parameters: the encoder built on its own plus the official classifier's, by formula.
    alone = encoder(arch='t', norm_cfg=dict(type='BN'))
    channels = model.head.in_channels
    head = (channels * 1024 + 1024 + 2 * 1024 + 1024 * 1000 + 1000 if family == 'segman' else
            channels * 1000 + 1000)
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in alone.parameters()) + head
    model.eval()
    with torch.no_grad():
        scores = model(torch.randn(2, 3, 224, 224))
    assert scores.shape == (2, 1000) and torch.isfinite(scores).all()


@pytest.mark.slow
@pytest.mark.parametrize('variant,millions', [('t', 3.51), ('s', 25.51), ('b', 45.02),
                                              ('l', 80.99)])
def test_segman_classifier_size_equals_the_official_one(variant, millions):
    # Parameter counts of the official SegMANEncoder_{t,s,b,l} with classifier, run on CPU
    # from the authors' code (../shared/reference/official-segman.md, section 5).
    model = build(CONFIG_DIR / f'segman-{variant}_in1k.py')
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions


def _shapes(state_dict):
    return OrderedDict((k, tuple(v.shape)) for k, v in state_dict.items())


def official_layout(family, load_golden):
    """{key: shape} of the official T ImageNet model, from sources independent of our code.

    SegMAN and LRFormer encoders: the authors' own modules (the golden files' state dicts);
    MSCAN: MMSeg's built-in MSCAN, in the key layout of the authors' files
    (``mlp.dwconv.dwconv.*``). Classifiers as the official code defines them
    (SegMAN ``classifier.{0,1,4}``, VAN / P2T ``head``).
    """
    if family == 'segnext':
        from mmseg.models.backbones import MSCAN

        encoder = MSCAN(embed_dims=[32, 64, 160, 256], depths=[3, 3, 5, 2],
                        mlp_ratios=[8, 8, 4, 4], norm_cfg=dict(type='BN'))
        keys = OrderedDict((k.replace('.mlp.dwconv.', '.mlp.dwconv.dwconv.'), tuple(v.shape))
                           for k, v in encoder.state_dict().items())
    else:
        golden = load_golden(f'{family}-t.pt')['state_dict']
        keys = OrderedDict((k[len('backbone.'):], tuple(v.shape)) for k, v in golden.items()
                           if k.startswith('backbone.'))
    if family == 'segman':
        keys.update({'classifier.0.weight': (1024, 192, 1, 1), 'classifier.0.bias': (1024, ),
                     'classifier.1.weight': (1024, ), 'classifier.1.bias': (1024, ),
                     'classifier.1.running_mean': (1024, ), 'classifier.1.running_var': (1024, ),
                     'classifier.1.num_batches_tracked': (), 'classifier.4.weight':
                     (1000, 1024, 1, 1), 'classifier.4.bias': (1000, )})
    else:
        channels = {'segnext': 256, 'lrformer': 384}[family]
        keys.update({'head.weight': (1000, channels), 'head.bias': (1000, )})
    return keys


@pytest.mark.parametrize('family', FAMILIES)
def test_classifier_keys_are_the_official_models(family, load_golden):
    from mmseg_segman.classification import to_official_state_dict

    official = official_layout(family, load_golden)
    ours = _shapes(to_official_state_dict(build(CONFIG_DIR / f'{family}-t_in1k.py')))
    if family == 'segnext':
        # Ours uses MMSeg's layout (mlp.dwconv.*, MMSeg's converted files); the authors'
        # mlp.dwconv.dwconv.* is renamed while loading (next test).
        official = OrderedDict((k.replace('.mlp.dwconv.dwconv.', '.mlp.dwconv.'), v)
                               for k, v in official.items())
    assert dict(ours) == dict(official)
    if family == 'segman':
        assert len(official) == 370 + 9  # encoder key count of the reference, + classifier


def official_classifier_scores(family, features, sd):
    """The official classifier applied to the last feature map, in float64, from the file."""
    f = features.double()
    w = {k: v.double() for k, v in sd.items()}
    if family == 'segman':
        x = F.conv2d(f, w['classifier.0.weight'], w['classifier.0.bias'])
        x = F.batch_norm(x, w['classifier.1.running_mean'], w['classifier.1.running_var'],
                         w['classifier.1.weight'], w['classifier.1.bias'], False, 0., 1e-5)
        x = F.silu(x).mean(dim=(2, 3))
        return x @ w['classifier.4.weight'].flatten(1).T + w['classifier.4.bias']
    return f.mean(dim=(2, 3)) @ w['head.weight'].T + w['head.bias']


@pytest.mark.parametrize('family', FAMILIES)
def test_official_file_loads_strictly_and_classifies(family, load_golden, tmp_path):
    from mmseg_segman.classification import load_classifier_weights

    layout = official_layout(family, load_golden)
    gen = torch.Generator().manual_seed(0)

    def random_file():
        sd = OrderedDict()
        for k, shape in layout.items():
            if k.endswith('num_batches_tracked'):
                sd[k] = torch.tensor(7)
            elif k.endswith('running_var'):
                sd[k] = torch.rand(shape, generator=gen) + 0.5
            else:
                sd[k] = 0.05 * torch.randn(shape, generator=gen)
        return sd

    ema, raw = random_file(), random_file()
    # A timm .pth.tar as the SegMAN authors release: EMA weights next to the raw ones.
    path = tmp_path / 'official.pth.tar'
    torch.save({'epoch': 299, 'state_dict': raw, 'state_dict_ema': ema}, path)
    model = build(CONFIG_DIR / f'{family}-t_in1k.py')
    found = load_classifier_weights(model, str(path))
    assert (found.source, found.prefix) == ('state_dict_ema', 'official')
    own = model.state_dict()
    renamed = {k.replace('.mlp.dwconv.dwconv.', '.mlp.dwconv.'): v for k, v in ema.items()}
    for key, value in renamed.items():
        prefix = 'classifier.' if family == 'segman' else 'head.'
        target = 'head.' + key[len(prefix):] if key.startswith(prefix) else 'backbone.' + key
        assert torch.equal(own[target], value), key
    model.eval()
    x = torch.randn(2, 3, 224, 224, generator=gen)
    with torch.no_grad():
        scores = model(x)
        features = model.backbone(x)[-1]
    expected = official_classifier_scores(family, features, ema)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-5)

    # A file of another variant or class count is refused, naming the keys.
    del ema['classifier.4.bias' if family == 'segman' else 'head.bias']
    torch.save({'state_dict_ema': ema}, path)
    with pytest.raises(CheckpointMismatchError, match=r'1 missing from the checkpoint \(head\.'):
        load_classifier_weights(build(CONFIG_DIR / f'{family}-t_in1k.py'), str(path))
    with pytest.raises(CheckpointMismatchError, match='another variant or num_classes'):
        load_classifier_weights(
            build(CONFIG_DIR / f'{family}-t_in1k.py', **{'model.head.num_classes': 10}),
            {'state_dict': raw})


def _types(node, where):
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield where, node['type']
        for key, value in node.items():
            yield from _types(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _types(value, f'{where}[{i}]')


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=lambda p: p.name)
def test_every_type_resolves_in_mmpretrain(path):
    import mmpretrain.registry as R

    registries = {
        'model': R.MODELS, 'train_dataloader': R.DATASETS, 'val_dataloader': R.DATASETS,
        'test_dataloader': R.DATASETS, 'val_evaluator': R.METRICS,
        'test_evaluator': R.METRICS, 'optim_wrapper': R.OPTIM_WRAPPERS,
        'param_scheduler': R.PARAM_SCHEDULERS, 'default_hooks': R.HOOKS,
        'custom_hooks': R.HOOKS, 'visualizer': R.VISUALIZERS,
    }
    # Keys whose dicts belong to another registry than their parent's.
    by_key = {'pipeline': R.TRANSFORMS, 'sampler': R.DATA_SAMPLERS, 'optimizer': R.OPTIMIZERS,
              'augments': R.BATCH_AUGMENTS, 'vis_backends': R.VISBACKENDS,
              'data_preprocessor': R.MODELS, 'loss': R.MODELS, 'init_cfg': None}
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmseg_segman' in cfg.custom_imports['imports']
    missing = []
    for top, registry in registries.items():
        for where, name in _types(cfg.get(top), top):
            keys = [k.split('[')[0] for k in where.split('.')]
            reg = next((by_key[k] for k in reversed(keys) if k in by_key), registry)
            if reg is None:  # init_cfg types: mmengine's initialisers
                from mmengine.registry import WEIGHT_INITIALIZERS as reg
            if reg.get(name) is None:
                missing.append(f'{where}: {name}')
    assert not missing, missing
