"""The model index (model-index.yml + configs/*/metafile.yml) and the packaged configs.

Checked against the configs themselves (names, recipe, crop), the built models (parameter
counts), the FLOPs tool, the FLOPs table of docs/flops.md and MMEngine's own readers of the
index (``BaseInferencer``, package-scoped ``mmseg_segman::`` config bases).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from config_helpers import strip_pretrained
from mmengine.config import Config
from mmengine.infer import BaseInferencer
from mmengine.registry import init_default_scope
from mmseg import registry as R

import mmseg_segman  # noqa: F401
from mmseg_segman.apis import find_model, index_root, list_models

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ('segman', 'segnext', 'lrformer')
DATASET_NAMES = {'ade20k': 'ADE20K', 'cityscapes': 'Cityscapes',
                 'coco-stuff164k': 'COCO-Stuff 164k'}
FIRST_LINE = re.compile(r'# (\d+) GPUs x (\d+) images? per GPU = (\d+) total, (\d+)k iterations')


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


METAFILES = {f: load_yaml(REPO / 'configs' / f / 'metafile.yml') for f in FAMILIES}
ENTRIES = [m for f in FAMILIES for m in METAFILES[f]['Models']]


def entry_id(entry):
    return entry['Name']


@pytest.fixture(autouse=True, scope='module')
def mmseg_scope():
    init_default_scope('mmseg')


def test_model_index_imports_every_metafile():
    index = load_yaml(REPO / 'model-index.yml')
    assert index == {'Import': [f'configs/{f}/metafile.yml' for f in FAMILIES]}


def test_every_family_config_has_exactly_one_entry():
    configs = {str(p.relative_to(REPO)) for f in FAMILIES
               for p in (REPO / 'configs' / f).glob('*.py')}
    listed = [e['Config'] for e in ENTRIES]
    assert sorted(listed) == sorted(configs)
    # and MMEngine's reader of the index sees the same models
    assert BaseInferencer.list_models('mmseg_segman') == [e['Name'] for e in ENTRIES]
    assert list_models() == [e['Name'] for e in ENTRIES]


@pytest.mark.parametrize('family', FAMILIES)
def test_collection_is_complete(family):
    [collection] = METAFILES[family]['Collections']
    assert set(collection) >= {'Name', 'License', 'Metadata', 'Paper', 'README', 'Frameworks'}
    assert collection['Metadata']['Training Data'] == list(DATASET_NAMES.values())
    assert collection['Paper']['URL'].startswith('https://arxiv.org/abs/')
    assert (REPO / collection['README']).is_file()
    assert all(e['In Collection'] == collection['Name'] for e in METAFILES[family]['Models'])


@pytest.mark.parametrize('entry', ENTRIES, ids=entry_id)
def test_entry_matches_its_config(entry, config_of, meta_model_of):
    path = REPO / entry['Config']
    assert path.is_file()
    assert entry['Name'] == path.stem
    dataset = path.stem.split('_', 1)[1]
    meta = entry['Metadata']
    cfg = config_of(path)
    gpus, per_gpu, total, kiters = map(
        int, FIRST_LINE.fullmatch(path.read_text().splitlines()[0]).groups())
    assert meta['Training Data'] == DATASET_NAMES[dataset]
    assert meta['Batch Size'] == total == cfg.total_batch_size
    assert meta['Batch Size per GPU'] == per_gpu == cfg.train_dataloader.batch_size
    assert meta['Training Resources'] == f'{gpus}x GPUs'
    assert meta['Iterations'] == kiters * 1000 == cfg.train_cfg.max_iters
    assert meta['Crop Size'] == 'x'.join(map(str, cfg.crop_size))
    assert meta['Pretrained Weights'].startswith('https://')
    [result] = entry['Results']
    assert result['Task'] == 'Semantic Segmentation'
    assert result['Dataset'] == DATASET_NAMES[dataset]
    if result['Metrics']:
        assert 'reported by the authors' in meta['Results Source']
        assert 'not reproduced' in meta['Results Source']
        assert 30 < result['Metrics']['mIoU'] < 90
        assert entry['Weights'].startswith('https://')
    else:  # SegNeXt on COCO-Stuff: no published numbers or weights
        assert entry['Name'].startswith('segnext-') and dataset == 'coco-stuff164k'
        assert 'Weights' not in entry and 'Results Source' not in meta
    # the config builds, and the listed parameter count is the built model's
    model = meta_model_of(path)
    count = sum(p.numel() for p in model.parameters())
    assert meta['Parameters (M)'] == pytest.approx(count / 1e6, abs=5e-4)


def test_weights_are_one_per_model_where_published():
    segman = [e['Weights'] for e in METAFILES['segman']['Models']]
    assert len(set(segman)) == 12 and all('drive.google.com/file/d/' in w for w in segman)
    segnext = [e.get('Weights') for e in METAFILES['segnext']['Models']
               if 'coco' not in e['Name']]
    assert len(set(segnext)) == 8 and all('cloud.tsinghua.edu.cn/f/' in w for w in segnext)


def _flops_table(section):
    """{model: GFLOPs} from a table of docs/flops.md (the 'ours' column)."""
    text = (REPO / 'docs' / 'flops.md').read_text()
    body = text[text.index(section):]
    body = body[:body.index('\n### ', 1) if '\n### ' in body[1:] else len(body)]
    rows = re.findall(r'^\| (\w+)-(\w)[^|]* \| ([\d.]+) \|', body, re.M)
    return {(family.lower(), variant.lower()): float(flops) for family, variant, flops in rows}


@pytest.mark.parametrize('dataset, section', [('ade20k', '### ADE20K'),
                                              ('cityscapes', '### Cityscapes')])
def test_flops_equal_the_measured_table(dataset, section):
    table = _flops_table(section)
    assert len(table) == 12
    for (family, variant), flops in table.items():
        meta = find_model(f'{family}-{variant}_{dataset}')['Metadata']
        assert meta['FLOPs (G)'] == flops, (family, variant)
        size = '1024x2048' if dataset == 'cityscapes' else \
            '640x640' if (family, variant) == ('lrformer', 'l') else '512x512'
        assert meta['FLOPs Input Size'] == size


def test_flops_of_a_coco_entry_equal_the_tool():
    spec = importlib.util.spec_from_file_location(
        'get_flops_tool', REPO / 'tools' / 'analysis' / 'get_flops.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    entry = find_model('segnext-t_coco-stuff164k')
    analyzer, _ = tool.get_flops(Config.fromfile(str(REPO / entry['Config'])), (512, 512), False)
    assert entry['Metadata']['FLOPs (G)'] == pytest.approx(analyzer.total() / 1e9, abs=5e-4)


def test_find_model_is_case_insensitive_and_misses_cleanly():
    assert find_model('SegMAN-T_ADE20K')['Config'] == 'configs/segman/segman-t_ade20k.py'
    assert find_model('segman-x_ade20k') is None


# The authors' mIoU(ss / ms+flip) as Visual-Attention-Network/SegNeXt's README gives them
# (its table, as corrected on 2022-09-30: T on ADE20K single-scale 41.1, not 41.4); the
# multi-scale + flip protocol is its tools/test.py --aug-test, which tta_pipeline follows.
SEGNEXT_README = {
    'segnext-t_ade20k': (41.1, 42.2), 'segnext-s_ade20k': (44.3, 45.8),
    'segnext-b_ade20k': (48.5, 49.9), 'segnext-l_ade20k': (51.0, 52.1),
    'segnext-t_cityscapes': (79.8, 81.4), 'segnext-s_cityscapes': (81.3, 82.7),
    'segnext-b_cityscapes': (82.6, 83.8), 'segnext-l_cityscapes': (83.2, 83.9),
}


@pytest.mark.parametrize('entry', ENTRIES, ids=entry_id)
def test_ms_flip_results_are_the_authors(entry):
    metrics = entry['Results'][0]['Metrics']
    source = entry['Metadata'].get('Results Source', '')
    assert set(metrics) <= {'mIoU', 'mIoU(ms+flip)'}
    if entry['Name'] in SEGNEXT_README:
        assert (metrics['mIoU'], metrics['mIoU(ms+flip)']) == SEGNEXT_README[entry['Name']]
        assert 'multi-scale + flip' in source and '--aug-test' in source
    else:  # SegMAN and LRFormer publish single-scale figures only
        assert 'mIoU(ms+flip)' not in metrics
        assert not metrics or 'no multi-scale + flip figure' in source \
            or 'neither gives a multi-scale + flip figure' in source


# --------------------------------------------------------------------------------------
# Packaged configs: mmseg_segman/.mim and `mmseg_segman::` bases
# --------------------------------------------------------------------------------------
def test_checkout_mim_links_point_at_the_configs_and_index():
    mim = REPO / 'mmseg_segman' / '.mim'
    assert (mim / 'configs').resolve() == (REPO / 'configs').resolve()
    assert (mim / 'model-index.yml').resolve() == (REPO / 'model-index.yml').resolve()
    assert Path(index_root()).resolve() == REPO.resolve()  # a checkout reads the repo root


CHILD_CONFIG = """\
_base_ = ['mmseg_segman::segman/segman-t_ade20k.py']
model = dict(decode_head=dict(num_classes=7))
train_dataloader = dict(batch_size=2)
"""


def test_package_scoped_base_loads_and_builds(tmp_path):
    path = tmp_path / 'my_segman.py'
    path.write_text(CHILD_CONFIG)
    cfg = Config.fromfile(str(path))
    reference = Config.fromfile(str(REPO / 'configs' / 'segman' / 'segman-t_ade20k.py'))
    assert cfg.model.decode_head.num_classes == 7
    assert cfg.train_dataloader.batch_size == 2
    for key in ('backbone', 'data_preprocessor', 'test_cfg'):
        assert cfg.model[key] == reference.model[key], key
    assert [dict(h, _scope_=None) for h in cfg.custom_hooks] == \
        [dict(h, _scope_=None) for h in reference.custom_hooks]
    # MMEngine tags the base's dicts with the package's scope; its registries build them
    assert cfg.model['_scope_'] == 'mmseg_segman'
    with torch.device('meta'):
        model = R.MODELS.build(strip_pretrained(cfg.model.to_dict()))
    assert type(model.backbone).__name__ == 'SegMANEncoder'
    assert model.decode_head.conv_seg.out_channels == 7
    from mmengine.registry import HOOKS, VISUALIZERS
    assert type(VISUALIZERS.build(cfg.visualizer)).__name__ == 'SegLocalVisualizer'
    hooks = [HOOKS.build(h) for h in cfg.custom_hooks]
    assert [type(h).__name__ for h in hooks] == ['CheckpointGuardHook', 'DataCheckHook',
                                                 'BatchSizeCheckHook', 'RandomStateHook',
                                                 'PlainParamGroupsHook']
    assert cfg.total_batch_size == 16


def test_unknown_packaged_config_names_the_file(tmp_path):
    path = tmp_path / 'bad.py'
    path.write_text("_base_ = ['mmseg_segman::segman/segman-x_ade20k.py']\n")
    with pytest.raises(FileNotFoundError, match='segman-x_ade20k.py'):
        Config.fromfile(str(path))


@pytest.mark.slow
def test_wheel_ships_configs_and_index_that_resolve_outside_the_repo(tmp_path):
    """Build a wheel, install it into a bare directory, load a packaged base from there."""
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('mmseg_segman', 'configs', 'requirements', 'setup.py', 'README.md',
                 'MANIFEST.in', 'model-index.yml', 'pyproject.toml'):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({'symlinks': True} if copy is shutil.copytree else {}))
    wheels, site = tmp_path / 'wheels', tmp_path / 'site'
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-w', str(wheels),
                          str(src)], check=True, cwd=src, timeout=600)
    [wheel] = wheels.glob('*.whl')
    subprocess.run(pip + ['install', '--no-deps', '--no-compile', '--target', str(site),
                          str(wheel)], check=True, timeout=600)
    mim = site / 'mmseg_segman' / '.mim'
    assert not (mim / 'configs').is_symlink() and (mim / 'model-index.yml').is_file()
    packaged = sorted(p.relative_to(mim / 'configs') for p in (mim / 'configs').rglob('*')
                      if p.is_file())
    expected = sorted(p.relative_to(REPO / 'configs') for p in (REPO / 'configs').rglob('*')
                      if p.is_file() and '__pycache__' not in p.parts)
    assert packaged == expected
    work = tmp_path / 'elsewhere'
    work.mkdir()
    (work / 'my_segman.py').write_text(CHILD_CONFIG)
    script = textwrap.dedent("""
        import mmseg_segman
        from mmengine.config import Config
        from mmseg_segman.apis import find_model, index_root
        cfg = Config.fromfile('my_segman.py')
        print(mmseg_segman.__file__)
        print(index_root())
        print(cfg.model.backbone.type, cfg.model.decode_head.num_classes,
              find_model('lrformer-l_ade20k')['Config'])
    """)
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONNOUSERSITE='1')
    out = subprocess.run([sys.executable, '-c', script], cwd=work, env=env, check=True,
                         capture_output=True, text=True, timeout=600).stdout.split('\n')
    # onedl-mmsegmentation prints a debug line ("Could not import OneDL") on import.
    out = [line for line in out if line != 'Could not import OneDL']
    assert out[0] == str(site / 'mmseg_segman' / '__init__.py')
    assert out[1] == str(mim)
    assert out[2] == 'SegMANEncoder 7 configs/lrformer/lrformer-l_ade20k.py'
