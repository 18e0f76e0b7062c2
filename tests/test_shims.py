"""The upstream workarounds: applied only where their defect is, and each test here fails
once its upstream is fixed (then the shim goes).

On the default stack (onedl-*) no shim is needed; on the frozen stack (mmseg 1.2.2 with
mmcv-lite) the mmcv._ext stand-in is.
"""
import importlib.util
import sys

import pytest

from mmseg_segman import shims


@pytest.mark.smoke
def test_mmcv_ext_stub_needed_exactly_when_mmseg_imports_compiled_ops():
    mask_classification = importlib.util.find_spec('mmseg.utils.mask_classification')
    with open(mask_classification.origin) as f:
        unguarded = '\nfrom mmcv.ops import' in f.read()
    # The defect: mainline mmseg imports compiled ops at module level. Once an mmseg
    # release guards the import, `unguarded` turns False and the stand-in must go.
    assert shims._mmseg_guards_mmcv_ops() is (not unguarded)
    if shims.mmcv_ext_available():
        assert shims.needs_mmcv_ext_stub() is False
    else:
        assert shims.needs_mmcv_ext_stub() is unguarded


@pytest.mark.smoke
def test_stub_names_the_missing_op():
    if not unguarded_mmseg():
        pytest.skip('this mmseg guards its mmcv.ops imports: no stand-in, nothing to call')
    from mmseg_segman.errors import MissingCompiledOpError

    ext = sys.modules['mmcv._ext']  # put there by the harness (tests/conftest.py)
    assert getattr(ext, '__mmseg_segman_stub__', False)
    with pytest.raises(MissingCompiledOpError, match="'roi_align_forward'.*mmcv-lite"):
        ext.roi_align_forward()


def unguarded_mmseg() -> bool:
    return not shims._mmseg_guards_mmcv_ops() and not shims.mmcv_ext_available()


def test_package_scoped_configs_need_no_shim_where_mmengine_uses_importlib():
    import inspect

    import mmengine.config.config as config_module

    uses_pkg_resources = 'pkg_resources' in inspect.getsource(
        config_module.get_installed_path)
    has_pkg_resources = importlib.util.find_spec('pkg_resources') is not None
    assert shims.needs_package_scoped_configs() is (uses_pkg_resources and
                                                     not has_pkg_resources)


def test_package_scoped_base_resolves(tmp_path):
    """``mmseg_segman::`` bases resolve, with the shim where it is needed, without elsewhere."""
    from mmengine import Config

    shims.enable_package_scoped_configs()  # no-op unless needed
    cfg_file = tmp_path / 'scoped.py'
    cfg_file.write_text("_base_ = ['mmseg_segman::segman/segman-t_ade20k.py']\n"
                        'train_dataloader = dict(batch_size=3)\n')
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.backbone.type == 'SegMANEncoder'
    assert cfg.train_dataloader.batch_size == 3


def test_mmseg_scope_on_the_onedl_stack(tmp_path):
    """onedl-mmengine maps the ``mmseg::`` scope to the distribution ``mmsegmentation``,
    which the onedl stack does not have (its distribution is onedl-mmsegmentation), so
    ``mmseg::`` bases fail there (docs/get_started.md, "Known upstream limitations"). This
    test fails once a release resolves them; then the note goes."""
    import importlib.metadata

    from mmengine import Config

    try:
        importlib.metadata.distribution('onedl-mmsegmentation')
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('not the onedl stack')
    cfg_file = tmp_path / 'scoped.py'
    cfg_file.write_text("_base_ = ['mmseg::_base_/datasets/ade20k.py']\n")
    with pytest.raises(ModuleNotFoundError, match='mmsegmentation is not installed'):
        Config.fromfile(str(cfg_file))


def test_apply_needed_shims_announces_each_in_one_line():
    lines = []
    applied = shims.apply_needed_shims(lines.append)
    assert len(lines) == len(applied)
    assert all(line.startswith('mmseg_segman: applied workaround') and '\n' not in line
               for line in lines)
    # Applying again changes nothing and is silent for what is in place.
    assert set(shims.apply_needed_shims(lambda line: None)) <= set(applied) | {
        'package-scoped configs without pkg_resources'}
