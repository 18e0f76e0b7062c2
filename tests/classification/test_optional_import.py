"""mmpretrain is optional: without it nothing of it is imported; a broken one only warns.

These run in both environments (``NEEDS_MMPRETRAIN = False``).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmseg_segman.classification import MMPRETRAIN_INSTALLED

NEEDS_MMPRETRAIN = False
REPO_ROOT = Path(__file__).resolve().parents[2]

# Imports the plugin and reports what got imported, the warnings and the registries.
PROBE = r'''
import json, sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    import mmseg_segman
from mmseg.registry import MODELS
from mmseg_segman import classification
try:
    classification.require_mmpretrain()
    required = ''
except ImportError as err:
    required = str(err)
print(json.dumps(dict(
    modules=sorted(m for m in sys.modules if m.split('.')[0] in ('mmpretrain', 'torchvision')),
    warnings=[str(w.message) for w in caught if 'mmpretrain' in str(w.message)],
    segman=MODELS.get('SegMANEncoder') is mmseg_segman.models.backbones.SegMANEncoder,
    registered=classification.mmpretrain_registered(), required=required)))
'''


def _probe(extra_path=None):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        ([str(extra_path)] if extra_path else []) + [str(REPO_ROOT)] +
        ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    out = subprocess.run([sys.executable, '-c', PROBE], env=env, cwd=str(REPO_ROOT),
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(MMPRETRAIN_INSTALLED, reason='mmpretrain is installed here (.venv-cls)')
def test_without_mmpretrain_nothing_is_imported():
    result = _probe()
    assert result['modules'] == []
    assert result['warnings'] == []
    assert result['segman'] is True
    assert result['registered'] is False
    assert 'mmpretrain is not installed' in result['required']
    assert 'tools/install.sh --classification' in result['required']


def test_broken_mmpretrain_warns_once_and_segmentation_still_loads(tmp_path):
    # An installed mmpretrain that fails on import, as 1.2.0 does without torchvision.
    fake = tmp_path / 'mmpretrain'
    fake.mkdir()
    (fake / '__init__.py').write_text(
        "raise ModuleNotFoundError(\"No module named 'torchvision'\", name='torchvision')\n")
    result = _probe(tmp_path)
    assert len(result['warnings']) == 1
    message = result['warnings'][0]
    assert 'mmpretrain is installed but does not import' in message
    assert "No module named 'torchvision'" in message
    assert 'tools/install.sh --classification' in message
    assert result['segman'] is True
    assert result['registered'] is False
    assert 'torchvision' in result['required']


@pytest.mark.skipif(not MMPRETRAIN_INSTALLED, reason='needs mmpretrain (.venv-cls)')
def test_with_mmpretrain_the_encoders_and_heads_are_registered():
    code = r'''
import json
import mmseg_segman
from mmpretrain.registry import MODELS
from mmseg.registry import MODELS as SEG
names = ['SegMANEncoder', 'SegNeXtMSCAN', 'LRFormer']
print(json.dumps(dict(
    same=[MODELS.get(n) is SEG.get(n) for n in names],
    heads=[MODELS.get(n).__name__ for n in ('SegMANClsHead', 'PooledLinearClsHead')])))
'''
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])))
    out = subprocess.run([sys.executable, '-c', code], env=env, cwd=str(REPO_ROOT),
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == dict(same=[True, True, True],
                          heads=['SegMANClsHead', 'PooledLinearClsHead'])
