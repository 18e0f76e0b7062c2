import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


def read_version():
    scope = {}
    with open('mmseg_segman/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(path):
    """Requirement lines of a pip requirements file, following its `-r FILE` includes."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line.startswith('-r '):
                out += read_requirements(os.path.join(os.path.dirname(path), line[3:].strip()))
            elif line and not line.startswith('-'):
                out.append(line)
    return out


# Files shipped in the package under mmseg_segman/.mim, MMSeg's layout: MMEngine resolves
# `mmseg_segman::<family>/<config>.py` bases and model names there, and openmim reads the
# model index there. A checkout has symlinks at that place (into configs/ and the root
# model-index.yml); a wheel gets copies.
MIM_FILES = ['configs', 'model-index.yml']


class build_py_with_mim(build_py):
    """build_py that also copies the configs and the model index into mmseg_segman/.mim."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):  # the source tree (and its links) is used
            return
        import shutil

        target = os.path.join(self.build_lib, 'mmseg_segman', '.mim')
        for name in MIM_FILES:
            dest = os.path.join(target, name)
            if os.path.islink(dest) or os.path.isfile(dest):
                os.remove(dest)
            elif os.path.isdir(dest):
                shutil.rmtree(dest)
            os.makedirs(target, exist_ok=True)
            if os.path.isdir(name):
                shutil.copytree(name, dest, ignore=shutil.ignore_patterns('__pycache__'))
            else:
                shutil.copyfile(name, dest)


setup(
    name='mmseg-segman',
    version=read_version(),
    description='SegMAN, SegNeXt and LRFormer for MMSegmentation 1.x, runnable on CPU',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmseg_segman', 'mmseg_segman.*']),
    python_requires='>=3.10',
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={
        # The OpenMMLab stack. Neither is forced on a user (both provide the import names
        # mmengine, mmcv, mmseg): the maintained continuation (default, tested in CI) ...
        'onedl': ['onedl-mmengine>=0.10.12', 'onedl-mmcv>=2.3.6', 'onedl-mmsegmentation>=1.4.2'],
        # ... or the last upstream releases (mmcv: full `mmcv` from OpenMMLab's wheel index
        # for GPUs; mmcv-lite here, which the plugin's tools complete; docs/get_started.md).
        'openmmlab': ['mmengine>=0.10.0,<1.0.0', 'mmsegmentation>=1.2.2,<1.3'],
        # What tools/deployment/pytorch2onnx.py needs, and nothing of the test toolchain.
        'deploy': read_requirements('requirements/deploy.txt'),
        # Optional accelerators; never required for import, training or tests.
        # They compile CUDA code by default: see docs/get_started.md.
        'mamba': ['mamba-ssm>=2.2', 'causal-conv1d>=1.4'],
        'natten': ['natten>=0.17'],
        'tests': read_requirements('requirements/tests.txt'),
        # ImageNet classification through mmpretrain (configs/imagenet); mmpretrain imports
        # torchvision, which must match the installed torch. The pinned CPU set is
        # requirements/classification.txt (tools/install.sh --classification).
        'classification': ['mmpretrain>=1.2.0,<1.3', 'torchvision'],
    },
    license='Apache-2.0',
    cmdclass={'build_py': build_py_with_mim},
)
