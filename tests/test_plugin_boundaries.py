"""``import mmseg_segman`` registers and changes nothing else (issue: a plugin that changes
nothing it does not own).

Both tests start fresh interpreters (a clean "before"), so they run in the slow tier.
"""
import json
import subprocess
import sys

import pytest

# Imports every module of torch, mmcv, mmengine and mmseg that the plugin's import touches
# (and more), records every callable attribute of every loaded module of those packages
# and every attribute of their classes, imports mmseg_segman, and records again.
SNAPSHOT = r'''
import json, os, signal, sys
import torch, torch.serialization, torch.distributed
import mmcv, mmcv.transforms
import mmengine, mmengine.config, mmengine.dist, mmengine.fileio, mmengine.hooks
import mmengine.model, mmengine.registry, mmengine.runner, mmengine.runner.checkpoint
import mmseg, mmseg.apis, mmseg.datasets, mmseg.engine, mmseg.models, mmseg.registry
import mmseg.datasets.transforms, mmseg.apis.inference

OWNERS = ('torch', 'mmcv', 'mmengine', 'mmseg')

def snapshot():
    seen = {}
    for name, module in list(sys.modules.items()):
        if module is None or name.split('.')[0] not in OWNERS:
            continue
        for attr, value in list(vars(module).items()):
            if callable(value) and not isinstance(value, type(sys)):
                seen[(name, attr)] = value
            if isinstance(value, type) and getattr(value, '__module__', '') == name:
                for key, member in list(vars(value).items()):
                    seen[(name, attr, key)] = member
    return seen

def state():
    from mmengine.runner import CheckpointLoader
    return dict(
        meta_path=[repr(f) for f in sys.meta_path],
        path_hooks=[repr(h) for h in sys.path_hooks],
        environ=sorted(os.environ.items()),
        signals={s.name: repr(signal.getsignal(s)) for s in
                 (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1)},
        safe_globals=repr(torch.serialization.get_safe_globals())
        if hasattr(torch.serialization, 'get_safe_globals') else '',
        schemes=repr(sorted(CheckpointLoader._schemes.items())),
        modules_before=sorted(n for n in sys.modules if n.startswith('mmseg_segman')),
    )

before, state_before = snapshot(), state()
import mmseg_segman
after, state_after = snapshot(), state()
changed = [list(k) for k, v in before.items() if k in after and after[k] is not v]
removed = [list(k) for k in before if k not in after]
modules_before = {k[0] for k in before}
added = [list(k) for k in after if k not in before and k[0] in modules_before]
state_after['modules_before'] = state_before['modules_before']
differs = {k: [state_before[k], state_after[k]] for k in state_before
           if state_before[k] != state_after[k]}
print(json.dumps(dict(checked=len(before), changed=changed, removed=removed, added=added,
                      state=differs,
                      registered='SegMANEncoder' in mmseg.registry.MODELS.module_dict)))
'''


@pytest.mark.smoke
def test_import_changes_no_function_of_torch_mmcv_mmengine_mmseg(tmp_path):
    result = subprocess.run([sys.executable, '-c', SNAPSHOT], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['checked'] > 10000  # the snapshot saw the libraries, not an empty set
    assert report['registered'] is True  # and the import did register the models
    assert report['changed'] == [], report['changed'][:20]
    assert report['removed'] == [], report['removed'][:20]
    assert report['added'] == [], report['added'][:20]
    assert report['state'] == {}, report['state']


@pytest.mark.smoke
def test_importing_the_libraries_loads_nothing_of_ours(tmp_path):
    code = ('import sys, torch, mmcv, mmengine, mmengine.runner, mmseg, mmseg.apis, '
            'mmseg.models, mmseg.datasets\n'
            # setuptools' finder of an editable install is not ours (a wheel has none).
            "print(sorted(n for n in sys.modules if 'segman' in n "
            "and not n.startswith('__editable__')))\n"
            "import site; print(sorted(p for d in site.getsitepackages() for p in "
            "__import__('os').listdir(d) if 'segman' in p and p.endswith('.pth') "
            "and not p.startswith('__editable__')))")
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    modules, pth_files = result.stdout.strip().splitlines()[-2:]
    assert modules == '[]'
    assert pth_files == '[]'  # no import hook of ours (only setuptools' editable finder)
