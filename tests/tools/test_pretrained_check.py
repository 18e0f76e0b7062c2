"""A missing pretrained file is reported before anything is built, for every family."""
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from mmseg_segman.utils.checkpoint import check_pretrained_files

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    'segman': ('segman-t_ade20k', 'SegMAN_Encoder_t.pth.tar', 'drive.google.com'),
    'segnext': ('segnext-t_ade20k', 'mscan_t.pth', 'download.openmmlab.com'),
    'lrformer': ('lrformer-t_ade20k', 'lrformer', 'yuhuan-wu/LRFormer-Models'),
}


@pytest.mark.parametrize('family', sorted(CONFIGS))
def test_config_check_names_key_file_source_and_the_way_out(family, tmp_path):
    name, file_part, source = CONFIGS[family]
    cfg = Config.fromfile(REPO / 'configs' / family / f'{name}.py')
    with pytest.raises(FileNotFoundError) as err:
        check_pretrained_files(cfg)
    message = str(err.value)
    assert 'model.backbone.init_cfg' in message and file_part in message
    assert source in message and 'model.backbone.init_cfg=None to train from scratch' in message
    # Present file, or training from scratch: nothing to report.
    weights = tmp_path / 'w.pth'
    weights.write_bytes(b'')
    cfg.model.backbone.init_cfg.checkpoint = str(weights)
    check_pretrained_files(cfg)
    cfg.model.backbone.init_cfg = None
    check_pretrained_files(cfg)


def test_model_pretrained_alias_is_checked_too():
    cfg = Config(dict(model=dict(type='EncoderDecoder', pretrained='nowhere.pth',
                                 backbone=dict(type='LRFormer'))))
    with pytest.raises(FileNotFoundError, match=r"model.pretrained 'nowhere.pth' does not exist"):
        check_pretrained_files(cfg)


@pytest.mark.slow  # one interpreter start with the whole stack
def test_train_tool_stops_before_building_the_dataloaders(tmp_path):
    """ADE20K is not on this machine: getting past the check would fail on the dataset."""
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/train.py'),
         str(REPO / 'configs/segman/segman-t_ade20k.py'), '--work-dir', str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    assert "pretrained/SegMAN_Encoder_t.pth.tar' does not exist" in result.stderr
    assert 'model.backbone.init_cfg=None' in result.stderr
    assert 'ADE' not in result.stderr and 'Traceback' not in result.stderr
