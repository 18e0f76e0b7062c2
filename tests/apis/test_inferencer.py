"""mmseg_segman.apis.MMSegInferencer: models by index name and by config path."""
import numpy as np
import pytest
import torch
from mmseg.apis import MMSegInferencer as MMSegOwnInferencer
from mmseg.apis import inference_model, init_model
from mmseg.datasets import ADE20KDataset

from mmseg_segman.apis import MMSegInferencer, find_model

REPO_CONFIG = 'configs/segman/segman-t_ade20k.py'


def image(h=64, w=64, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def test_by_name_builds_the_indexed_config_with_random_weights_and_a_warning():
    url = find_model('segman-t_ade20k')['Weights']
    with pytest.warns(UserWarning, match='random weights') as record:
        inferencer = MMSegInferencer(model='segman-t_ade20k', device='cpu')
    assert any(url in str(w.message) for w in record)  # names the authors' checkpoint
    assert type(inferencer.model.backbone).__name__ == 'SegMANEncoder'
    assert inferencer.model.decode_head.channels == 128  # the T config
    # classes and palette of the config's dataset, not MMSeg's Cityscapes fallback
    assert tuple(inferencer.model.dataset_meta['classes']) == ADE20KDataset.METAINFO['classes']
    prediction = inferencer(image(64, 64))['predictions']
    assert prediction.shape == (64, 64)
    assert 0 <= prediction.min() and prediction.max() < 150


@pytest.mark.slow  # ~5 s: two 512x512 inferences
def test_by_config_path_with_weights_equals_mmseg_inference(tmp_path):
    torch.manual_seed(0)
    reference = init_model(REPO_CONFIG, None, device='cpu')
    for p in reference.parameters():  # weights that give a varied prediction
        p.data.normal_(0, 0.2)
    checkpoint = tmp_path / 'segman_t.pth'
    torch.save({'state_dict': reference.state_dict(), 'meta': {}}, checkpoint)
    img = image(48, 80, seed=1)
    inferencer = MMSegInferencer(model=REPO_CONFIG, weights=str(checkpoint), device='cpu')
    prediction = inferencer(img)['predictions']
    model = init_model(REPO_CONFIG, str(checkpoint), device='cpu')
    expected = inference_model(model, img).pred_sem_seg.data[0].numpy()
    assert prediction.shape == (48, 80)
    assert len(np.unique(prediction)) > 1
    np.testing.assert_array_equal(prediction, expected)


def test_unknown_name_says_what_names_exist():
    with pytest.raises(ValueError, match='config stems, e.g. segman-t_ade20k'):
        MMSegInferencer(model='segman-x_ade20k', device='cpu')


def test_mmseg_names_still_resolve_to_mmseg_configs():
    inferencer = object.__new__(MMSegInferencer)  # only the metafile lookup, no model
    inferencer.scope = 'mmseg'
    name = 'segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512'
    cfg, weights = inferencer._load_model_from_metafile(name)
    assert cfg.model.backbone.type == 'MSCAN'
    assert weights.startswith('https://') and 'segnext_mscan-t' in weights  # MMSeg's own


def test_mmseg_own_inferencer_finds_the_names_in_the_plugin_scope(tmp_path):
    """MMSeg's class with scope='mmseg_segman' reads this plugin's index (weights given)."""
    config = 'configs/segnext/segnext-t_ade20k.py'
    torch.manual_seed(0)
    reference = init_model(config, None, device='cpu')
    for p in reference.parameters():
        p.data.normal_(0, 0.2)
    checkpoint = tmp_path / 'segnext_t.pth'
    torch.save({'state_dict': reference.state_dict(), 'meta': {}}, checkpoint)
    img = image(40, 56, seed=2)
    inferencer = MMSegOwnInferencer(model='segnext-t_ade20k', weights=str(checkpoint),
                                    device='cpu', scope='mmseg_segman')
    prediction = inferencer(img)['predictions']
    expected = inference_model(init_model(config, str(checkpoint), device='cpu'),
                               img).pred_sem_seg.data[0].numpy()
    assert len(np.unique(prediction)) > 1
    np.testing.assert_array_equal(prediction, expected)


def test_weights_of_another_class_count_are_refused_naming_the_keys(tmp_path):
    """As init_model: a checkpoint that does not fit raises instead of predicting with a
    random head; strict_load=False loads the matching weights only."""
    from mmseg_segman.errors import CheckpointMismatchError

    config = 'configs/toy/fcn-r18-narrow_toy.py'
    other = init_model(config, None, device='cpu', cfg_options={
        'model.decode_head.num_classes': 7})
    checkpoint = tmp_path / 'seven.pth'
    torch.save({'state_dict': other.state_dict(), 'meta': {}}, checkpoint)
    with pytest.raises(CheckpointMismatchError) as info:
        MMSegInferencer(model=config, weights=str(checkpoint), device='cpu')
    message = str(info.value)
    assert str(checkpoint) in message
    assert 'decode_head.conv_seg.weight: checkpoint [7, 64, 1, 1] vs model [4, 64, 1, 1]' \
        in message
    assert 'strict_load=False' in message
    loose = MMSegInferencer(model=config, weights=str(checkpoint), device='cpu',
                            strict_load=False)  # mmengine logs the skipped keys
    key = 'backbone.stem.0.weight'
    assert torch.equal(loose.model.state_dict()[key], other.state_dict()[key])


def test_weights_that_run_code_are_refused(tmp_path):
    import os

    from mmseg_segman.errors import CheckpointRefusedError

    class Reduce:
        def __reduce__(self):
            return os.system, (f'touch {tmp_path / "pwned"}', )

    torch.save({'state_dict': {}, 'x': Reduce()}, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointRefusedError, match='evil.pth'):
        MMSegInferencer(model='configs/toy/fcn-r18-narrow_toy.py',
                        weights=str(tmp_path / 'evil.pth'), device='cpu')
    assert not (tmp_path / 'pwned').exists()
