"""MMSeg's own entry points with the plugin's configs and no ``import mmseg_segman``.

Every check runs in a fresh interpreter whose code never imports the plugin: the configs'
``custom_imports`` load it, as in any MMSeg project. The interpreters run in a temporary
directory, so the plugin comes from the install (``pip install -e .`` maps it to this
checkout), as for a user.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mmseg
import numpy as np
import pytest
import torch
from make_toy_dataset import make_toy_dataset
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint
from mmseg.registry import MODELS
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
MMSEG_TOOLS = Path(mmseg.__file__).parent / '.mim' / 'tools'
TOY_SEGMAN = REPO_ROOT / 'configs' / 'toy' / 'segman-t_toy.py'
TOY_FCN = REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'
SEGMAN_T = REPO_ROOT / 'configs' / 'segman' / 'segman-t_ade20k.py'
SEGNEXT_T = REPO_ROOT / 'configs' / 'segnext' / 'segnext-t_ade20k.py'


def python(args, cwd, timeout=300):
    """Run ``python ARGS`` as a user would: cwd outside the checkout."""
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ok(result):
    assert result.returncode == 0, f'{result.stdout[-2000:]}\n{result.stderr[-4000:]}'
    return result.stdout


def test_mmseg_apis_run_a_plugin_model(tmp_path):
    """init_model / inference_model / show_result_pyplot / MMSegInferencer on SegMAN-T
    with a checkpoint (random weights written here): the plugin, loaded by the config's
    custom_imports, predicts exactly what this process, which imported it, predicts."""
    from mmseg.apis import inference_model, init_model

    cfg = Config.fromfile(TOY_SEGMAN)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    meta = dict(classes=list(cfg.metainfo.classes), palette=cfg.metainfo.palette)
    save_checkpoint({'meta': dict(dataset_meta=meta), 'state_dict': model.state_dict()},
                    str(tmp_path / 'segman-t.pth'))
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    np.save(tmp_path / 'img.npy', img)
    code = f'''
import json, sys, numpy as np
from mmseg.apis import MMSegInferencer, init_model, inference_model, show_result_pyplot
img = np.load('img.npy')
model = init_model({str(TOY_SEGMAN)!r}, 'segman-t.pth', device='cpu')
result = inference_model(model, img)
vis = show_result_pyplot(model, img, result, show=False, out_file='vis.png')
inferencer = MMSegInferencer(model={str(TOY_SEGMAN)!r}, weights='segman-t.pth',
                             device='cpu')
pred2 = inferencer(img, return_datasamples=True).pred_sem_seg.data
np.save('pred.npy', result.pred_sem_seg.data.numpy())
np.save('pred2.npy', pred2.numpy())
print(json.dumps(dict(backbone=type(model.backbone).__name__, vis=list(vis.shape),
                      plugin='mmseg_segman' in sys.modules)))
'''
    res = json.loads(ok(python(['-c', code], tmp_path)).splitlines()[-1])
    assert res == dict(backbone='SegMANEncoder', vis=[40, 56, 3], plugin=True)
    assert (tmp_path / 'vis.png').is_file()
    here = inference_model(init_model(str(TOY_SEGMAN), str(tmp_path / 'segman-t.pth'),
                                      device='cpu'), img).pred_sem_seg.data.numpy()
    assert here.shape == (1, 40, 56) and here.max() < 4
    np.testing.assert_array_equal(np.load(tmp_path / 'pred.npy'), here)
    np.testing.assert_array_equal(np.load(tmp_path / 'pred2.npy'), here)


@pytest.mark.smoke
def test_mmseg_train_and_test_scripts_run_the_toy_config(tmp_path):
    """MMSeg's own tools/train.py and tools/test.py on the plugin's toy config: the
    config's custom_imports is all it takes (and its hooks run: atomic checkpoints,
    weights-only loading of the test checkpoint)."""
    make_toy_dataset(str(tmp_path / 'toy'), num_train=4, num_val=2, size=32)
    opts = ['train_cfg.max_iters=4', 'train_cfg.val_interval=4',
            'default_hooks.checkpoint.interval=4', 'train_dataloader.batch_size=2']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={tmp_path / "toy"}', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    work = tmp_path / 'work'
    ok(python([MMSEG_TOOLS / 'train.py', TOY_FCN, '--work-dir', work, '--cfg-options',
               *opts], tmp_path))
    assert (work / 'iter_4.pth').is_file()
    assert not [p for p in work.iterdir() if '.tmp' in p.name]  # atomic writes cleaned up
    result = python([MMSEG_TOOLS / 'test.py', TOY_FCN, work / 'iter_4.pth', '--work-dir',
                     work, '--cfg-options', *opts], tmp_path)
    out = ok(result) + result.stderr
    assert re.search(r'mIoU: \d+\.\d+', out), out[-3000:]


def test_print_config_on_a_plugin_config(tmp_path):
    out = ok(python([MMSEG_TOOLS / 'misc' / 'print_config.py', SEGMAN_T, '--graph'],
                    tmp_path))
    assert "type='SegMANEncoder'" in out and "type='SegMANDecoder'" in out
    # --graph builds the model with mmseg.apis.init_model and writes its repr.
    graph = (tmp_path / 'example-graph.txt').read_text()
    assert graph.startswith('EncoderDecoder(') and 'SegMANEncoder(' in graph
    assert Config.fromfile(tmp_path / 'example.py').model.backbone.type == 'SegMANEncoder'


def _training_checkpoint(path):
    """What Runner.save_checkpoint writes: weights, optimizer, message hub, meta."""
    hub = MessageHub(name='entry-points-test')
    for loss in (1.5, 1.25, np.float64(0.75)):
        hub.update_scalar('train/loss', loss)
    weights = {'conv.weight': torch.randn(4, 3, 3, 3), 'conv.bias': torch.randn(4)}
    save_checkpoint({'meta': dict(iter=3, seed=7), 'state_dict': weights,
                     'optimizer': dict(state={}, param_groups=[dict(lr=0.1)]),
                     'message_hub': hub.state_dict()}, str(path))
    return weights


def test_publish_model_reads_a_training_checkpoint(tmp_path):
    """The plugin's tools/misc/publish_model.py: weights-only read of a training checkpoint
    (MMSeg's own refuses it on torch >= 2.6 with mainline mmengine, mmengine#1655)."""
    weights = _training_checkpoint(tmp_path / 'iter_3.pth')
    out = ok(python([REPO_ROOT / 'tools' / 'misc' / 'publish_model.py', 'iter_3.pth',
                     'published.pth'], tmp_path))
    final = tmp_path / out.strip().splitlines()[-1]
    sha = hashlib.sha256(final.read_bytes()).hexdigest()
    assert final.name == f'published-{sha[:8]}.pth'
    published = torch.load(final, weights_only=True)
    assert set(published) == {'meta', 'state_dict'}  # no optimizer, no message hub
    assert all(torch.equal(published['state_dict'][k], v) for k, v in weights.items())


def _mmseg_release():
    """(distribution, version) of the installed mmseg: the two stacks differ in bugs."""
    import importlib.metadata

    for dist in ('onedl-mmsegmentation', 'mmsegmentation'):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def test_mmseg_get_flops_on_a_plugin_model(tmp_path):
    """MMSeg's get_flops.py builds the plugin's model. onedl-mmsegmentation counts it;
    mainline 1.2.2 then calls mmengine 0.10.7's get_model_complexity_info with both
    ``input_shape`` and ``inputs``, which mmengine refuses for every model (MMSeg's own
    too); the plugin's tools/analysis/get_flops.py is the working counter there."""
    result = python([MMSEG_TOOLS / 'analysis_tools' / 'get_flops.py', SEGNEXT_T,
                     '--shape', '64', '64'], tmp_path)
    if _mmseg_release()[0] == 'onedl-mmsegmentation':
        out = ok(result)
        assert re.search(r'Flops: [\d.]+ ?[GM]', out), out[-2000:]
        return
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == 'ValueError: "input_shape" and "inputs" cannot be both set.', (
        result.stderr[-3000:])


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    """Two ADE20K-layout samples (jpg images, png masks with labels 0..150)."""
    root = tmp_path_factory.mktemp('ade')
    rng = np.random.default_rng(0)
    for split in ('training', 'validation'):
        for folder in ('images', 'annotations'):
            (root / folder / split).mkdir(parents=True)
        for i in range(2):
            name = f'ADE_{split}_{i:08d}'
            Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
                root / 'images' / split / f'{name}.jpg')
            Image.fromarray(rng.integers(0, 151, (40, 56), dtype=np.uint8)).save(
                root / 'annotations' / split / f'{name}.png')
    return root


@pytest.mark.parametrize('script', ['analysis_tools/browse_dataset.py',
                                    'misc/browse_dataset.py'])
def test_browse_dataset_on_a_plugin_config(tmp_path, ade_root, script):
    """Both browse_dataset scripts build the plugin config's dataset and pipeline. On
    onedl-mmsegmentation they draw every sample; mainline 1.2.2 fails inside its
    SegLocalVisualizer (cv2.rectangle on a non-contiguous array,
    open-mmlab/mmsegmentation#3405)."""
    result = python([MMSEG_TOOLS / script, SEGMAN_T, '--not-show', '--output-dir',
                     tmp_path / 'vis', '--cfg-options',
                     f'train_dataloader.dataset.data_root={ade_root}'], tmp_path)
    if _mmseg_release()[0] == 'onedl-mmsegmentation':
        ok(result)
        drawn = [p for p in (tmp_path / 'vis').rglob('*') if p.is_file()]
        assert len(drawn) == 2, drawn
        return
    assert result.returncode != 0
    assert 'Layout of the output array img is incompatible with cv::Mat' in result.stderr


# Third-party packages that some of MMSeg's scripts import and that neither mmseg nor this
# plugin installs (docs/get_started.md names them): the script then skips, naming it.
OPTIONAL_PACKAGES = {
    'seaborn': 'analysis_tools/analyze_logs.py (pip install -r requirements/tools.txt)',
    'pytorch_grad_cam': 'analysis_tools/visualization_cam.py (grad-cam needs torchvision)',
    'detail': 'dataset_converters/pascal_context.py (the Detail API, not on PyPI)',
    'nibabel': 'dataset_converters/synapse.py (pip install nibabel)',
}
SCRIPTS = sorted(str(p.relative_to(MMSEG_TOOLS)) for folder in
                 ('analysis_tools', 'misc', 'dataset_converters', 'deployment')
                 for p in (MMSEG_TOOLS / folder).glob('*.py'))


# Runs each script as ``__main__`` with ``--help`` in one fresh interpreter (one import of
# torch and MMSeg for all 27, instead of one each: about a minute less), recording its exit
# status and output; a traceback of the script goes to its own stderr.
_HELP_ALL = r'''
import contextlib, io, json, runpy, sys, traceback
results = {}
for script in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [script, '--help']
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name='__main__')
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
    results[script] = dict(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
print(json.dumps(results))
'''


@pytest.fixture(scope='module')
def help_of_every_script(tmp_path_factory):
    result = python(['-c', _HELP_ALL, *(MMSEG_TOOLS / s for s in SCRIPTS)],
                    tmp_path_factory.mktemp('help'), timeout=600)
    return {str(Path(k).relative_to(MMSEG_TOOLS)): v
            for k, v in json.loads(ok(result).splitlines()[-1]).items()}


@pytest.mark.slow
@pytest.mark.parametrize('script', SCRIPTS)
def test_every_mmseg_script_starts(help_of_every_script, script):
    result = help_of_every_script[script]
    missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", result['stderr'])
    if result['returncode'] != 0 and missing and missing.group(1) in OPTIONAL_PACKAGES:
        pytest.skip(f'needs {missing.group(1)}: {OPTIONAL_PACKAGES[missing.group(1)]}')
    assert result['returncode'] == 0, result['stdout'][-2000:] + result['stderr'][-4000:]
    assert result['stdout'].startswith('usage:')
