"""Registration next to MMSeg's whole zoo (no name collision); no accelerator needed."""
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from mmseg_segman.models import backbones, decode_heads

REPO_ROOT = Path(__file__).resolve().parents[1]


def exported_modules():
    """nn.Module classes the model sub-packages export (their registration lines)."""
    return {
        name: obj
        for pkg in (backbones, decode_heads)
        for name, obj in vars(pkg).items()
        if inspect.isclass(obj) and issubclass(obj, torch.nn.Module)
        and obj.__module__.startswith('mmseg_segman.')
    }


def test_every_exported_model_is_registered_under_its_own_name():
    register_all_modules(init_default_scope=False)  # the full MMSeg zoo
    ours = exported_modules()
    assert ours, 'no backbone or decode head is exported yet'
    for name, cls in ours.items():
        assert MODELS.get(name) is cls, name


def test_no_name_shadows_an_mmseg_module_even_ignoring_case():
    register_all_modules(init_default_scope=False)
    ours = {name for name, cls in MODELS.module_dict.items()
            if cls.__module__.startswith('mmseg_segman.')}
    theirs = {name.lower() for name, cls in MODELS.module_dict.items()
              if not cls.__module__.startswith('mmseg_segman.')}
    assert ours, 'nothing of mmseg_segman is registered'
    assert not {n for n in ours if n.lower() in theirs}
    # MMSeg's own SegNeXt parts keep their names and classes.
    assert MODELS.get('MSCAN').__module__.startswith('mmseg.models')
    assert MODELS.get('LightHamHead').__module__.startswith('mmseg.models')


def test_zoo_first_then_plugin_in_a_fresh_interpreter(tmp_path):
    """The opposite import order (MMSeg's zoo before the plugin) also registers cleanly."""
    code = ('from mmseg.utils import register_all_modules\n'
            'register_all_modules()\n'
            'import mmseg_segman\n'
            'from mmseg.registry import MODELS\n'
            "print(sum(c.__module__.startswith('mmseg_segman.') "
            'for c in MODELS.module_dict.values()))\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, text=True,
                            capture_output=True, timeout=240,
                            env=os.environ)
    assert result.returncode == 0, result.stderr
    in_process = sum(c.__module__.startswith('mmseg_segman.')
                     for c in MODELS.module_dict.values())
    assert int(result.stdout.split()[-1]) == in_process > 0


def test_models_train_without_the_optional_accelerators(tmp_path):
    """natten and mamba-ssm are optional: with both made unimportable, the package
    imports and SegMAN (which uses both operators) runs a training step."""
    code = (
        'import sys\n'
        "for name in ('natten', 'mamba_ssm', 'selective_scan_cuda', 'causal_conv1d'):\n"
        '    sys.modules[name] = None  # any import of it raises ImportError\n'
        'import json, torch, mmseg_segman\n'
        'from mmengine import Config\n'
        'from mmengine.model import revert_sync_batchnorm\n'
        'from mmseg.registry import MODELS\n'
        'from mmengine.registry import init_default_scope\n'
        "init_default_scope('mmseg')\n"
        "cfg = Config.fromfile('configs/toy/segman-t_toy.py')\n"
        'model = revert_sync_batchnorm(MODELS.build(cfg.model)).train()\n'
        'logits = model(torch.randn(2, 3, 64, 64), mode="tensor")\n'
        'logits.square().mean().backward()\n'
        'grads = [p.grad for p in model.parameters() if p.grad is not None]\n'
        'norm = sum(float(g.norm()) for g in grads)\n'
        'print(json.dumps([list(logits.shape), norm]))\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, text=True,
                            capture_output=True, timeout=240,
                            env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    shape, grad_norm = json.loads(result.stdout.splitlines()[-1])
    assert shape[:2] == [2, 4]
    assert math.isfinite(grad_norm) and grad_norm > 0
