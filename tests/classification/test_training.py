"""Training and evaluation of the T classifiers on a tiny synthetic image folder, and the
weights flowing between classification and segmentation (both directions)."""
import math

import pytest
import torch
from conftest import CONFIG_DIR, FAMILIES, REPO_ROOT, small_data_cfg, write_image_folder
from mmengine import Config

CLASSES = ('dark', 'light')
SEG_CONFIG = {'segman': 'segman/segman-t_ade20k.py', 'segnext': 'segnext/segnext-t_ade20k.py',
              'lrformer': 'lrformer/lrformer-t_ade20k.py'}


def tiny_cfg(family, root, work_dir, epochs=3):
    """The family's T config on ``root`` (2 classes), plain pipeline, no batch augmentation,
    constant lr 1e-3: what a few iterations on 16 images can learn from."""
    cfg = Config.fromfile(str(CONFIG_DIR / f'{family}-t_in1k.py'))
    def data():  # a fresh dict each time: merging consumes its _delete_ keys
        return small_data_cfg(root, CLASSES, batch_size=4, size=64)

    train = dict(data(), sampler=dict(type='DefaultSampler', shuffle=True, _delete_=True))
    cfg.merge_from_dict({
        'train_dataloader': train, 'val_dataloader': data(), 'test_dataloader': data(),
        'val_evaluator': dict(type='Accuracy', topk=(1, )),
        'test_evaluator': dict(type='Accuracy', topk=(1, )),
        'model.head.num_classes': len(CLASSES),
        'model.data_preprocessor.num_classes': len(CLASSES),
        'model.train_cfg': None,
        'auto_scale_lr.enable': False,
        'optim_wrapper.optimizer.lr': 1e-3,
        'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0,
                                 end=epochs)],
        'train_cfg': dict(by_epoch=True, max_epochs=epochs, val_interval=epochs + 1),
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': epochs,
        'randomness': dict(seed=0),
        'work_dir': str(work_dir),
    })
    return cfg


@pytest.fixture(scope='module', params=FAMILIES)
def trained(request, tmp_path_factory):
    """(family, runner, losses, checkpoint path) after 3 epochs x 4 iterations."""
    from mmengine.runner import Runner

    family = request.param
    tmp = tmp_path_factory.mktemp(family)
    root = write_image_folder(tmp / 'images', {'dark': 8, 'light': 8}, size=72)
    runner = Runner.from_cfg(tiny_cfg(family, root, tmp / 'work'))
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0].tolist()
    return family, runner, losses, tmp / 'work' / 'epoch_3.pth'


@pytest.mark.slow
def test_loss_decreases(trained):
    family, _, losses, _ = trained
    assert len(losses) == 12
    # The least loss LabelSmoothLoss(0.1) can reach with 2 classes: the entropy of the
    # smoothed target [0.95, 0.05]; chance level (equal scores) is ln 2 = 0.693.
    floor = -(0.95 * math.log(0.95) + 0.05 * math.log(0.05))
    last = sum(losses[-3:]) / 3
    assert losses[0] > floor + 0.2, losses
    assert last < losses[0] - 0.2 and last < floor + 0.15, (family, losses)


@pytest.mark.slow
def test_top1_equals_the_predictions_counted_by_hand(trained):
    family, runner, _, _ = trained
    metrics = runner.test()
    model = runner.model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in runner.test_dataloader:
            data = model.data_preprocessor(batch, training=False)
            scores = model(data['inputs'], mode='tensor')
            labels = torch.cat([s.gt_label for s in data['data_samples']])
            correct += int((scores.argmax(dim=1) == labels).sum())
            total += len(labels)
    assert total == 16
    assert metrics['accuracy/top1'] == pytest.approx(100 * correct / total)


@pytest.mark.slow
def test_segmentation_backbone_loads_the_classifier_checkpoint(trained):
    """mmpretrain's checkpoint (backbone.*, head.*; EMA-averaged state_dict for SegMAN) goes
    into the segmentation backbone through init_cfg, every backbone key matched."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    family, _, _, path = trained
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / SEG_CONFIG[family]))
    backbone_cfg = cfg.model.backbone
    backbone_cfg.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    init_default_scope('mmseg')
    backbone = MODELS.build(backbone_cfg)
    backbone.init_weights()
    own = backbone.state_dict()
    file = checkpoint['state_dict']
    assert set('backbone.' + k for k in own) == {k for k in file if k.startswith('backbone.')}
    for key, value in own.items():
        assert torch.equal(value, file['backbone.' + key]), key
    if family == 'segman':  # EMA: the saved state_dict is the average, not the raw weights
        raw = checkpoint['ema_state_dict']
        assert any(not torch.equal(file[k], raw['module.' + k]) for k in file
                   if k.startswith('backbone.') and 'module.' + k in raw)


@pytest.mark.parametrize('family', FAMILIES)
def test_classifier_backbone_loads_a_segmentor_checkpoint(family, tmp_path):
    """The reverse: a segmentor's weights (backbone.*, decode_head.*) into the classifier."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS as CLS
    from mmseg.registry import MODELS as SEG

    seg_cfg = Config.fromfile(str(REPO_ROOT / 'configs' / SEG_CONFIG[family]))
    seg_cfg.model.backbone.init_cfg = None
    init_default_scope('mmseg')
    segmentor = SEG.build(seg_cfg.model)
    segmentor.init_weights()
    path = tmp_path / 'segmentor.pth'
    torch.save({'state_dict': segmentor.state_dict(), 'meta': {}}, path)

    cls_cfg = Config.fromfile(str(CONFIG_DIR / f'{family}-t_in1k.py'))
    cls_cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    init_default_scope('mmpretrain')
    classifier = CLS.build(cls_cfg.model)
    classifier.init_weights()
    seg_backbone = segmentor.backbone.state_dict()
    own = classifier.backbone.state_dict()
    assert set(own) == set(seg_backbone)
    for key, value in own.items():
        assert torch.equal(value, seg_backbone[key]), key
