"""demo/image_demo.py: the overlay image is the prediction painted in the dataset palette."""
import importlib.util
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmseg.apis import inference_model, init_model
from mmseg.datasets import ADE20KDataset

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / 'configs' / 'segnext' / 'segnext-t_ade20k.py')
_spec = importlib.util.spec_from_file_location('image_demo', REPO / 'demo' / 'image_demo.py')
image_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_demo)


@pytest.fixture
def img_file(tmp_path):
    path = tmp_path / 'input.png'
    mmcv.imwrite(np.random.RandomState(0).randint(0, 256, (60, 84, 3), dtype=np.uint8),
                 str(path))
    return path


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = init_model(CONFIG, None, device='cpu')
    for p in model.parameters():  # weights that give a varied prediction
        p.data.normal_(0, 0.2)
    path = tmp_path / 'segnext_t.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def test_overlay_is_the_prediction_in_the_palette(img_file, checkpoint, tmp_path):
    out = tmp_path / 'overlay.png'
    image_demo.main([str(img_file), CONFIG, str(checkpoint), '--out-file', str(out),
                     '--device', 'cpu', '--opacity', '1'])
    overlay = mmcv.imread(str(out), channel_order='rgb')
    assert overlay.shape == (60, 84, 3)
    # independent prediction with MMSeg's API and the same checkpoint
    model = init_model(CONFIG, str(checkpoint), device='cpu')
    prediction = inference_model(model, str(img_file)).pred_sem_seg.data[0].numpy()
    assert len(np.unique(prediction)) > 1
    palette = np.array(ADE20KDataset.METAINFO['palette'], dtype=np.uint8)
    # opacity 1: every pixel is its class's colour
    np.testing.assert_array_equal(overlay, palette[prediction])


def test_without_checkpoint_warns_and_blends_with_the_image(img_file, tmp_path):
    out = tmp_path / 'overlay.png'
    with pytest.warns(UserWarning, match='random weights'):
        image_demo.main([str(img_file), CONFIG, '--out-file', str(out), '--device', 'cpu',
                         '--opacity', '0.5', '--title', 'check'])
    overlay = mmcv.imread(str(out), channel_order='rgb').astype(int)
    source = mmcv.imread(str(img_file), channel_order='rgb').astype(int)
    assert overlay.shape == source.shape
    # half image, half a palette colour: each pixel is within rounding of some blend
    palette = np.array(ADE20KDataset.METAINFO['palette'])
    blends = 0.5 * source[:, :, None, :] + 0.5 * palette[None, None]
    nearest = np.abs(blends - overlay[:, :, None, :]).max(-1).min(-1)
    assert nearest.max() <= 1


@pytest.mark.parametrize('argv, message', [
    (['missing.png', CONFIG], "img 'missing.png' does not exist"),
    (['{img}', CONFIG, 'nope.pth'], "checkpoint 'nope.pth' does not exist"),
    (['{img}', CONFIG, '--opacity', '0'], 'opacity must be in'),
])
def test_bad_arguments_are_named(argv, message, img_file, capsys):
    with pytest.raises(SystemExit):
        image_demo.parse_args([a.format(img=img_file) for a in argv])
    assert message in capsys.readouterr().err
