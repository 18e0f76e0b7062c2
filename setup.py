import os

from setuptools import Command, find_packages, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.build import build
except ImportError:  # setuptools < 62.4
    from distutils.command.build import build


def read_version():
    scope = {}
    with open('mmseg_segman/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(path):
    with open(path) as f:
        return [ln.split('#')[0].strip() for ln in f if ln.split('#')[0].strip()]


class build_autoload_pth(Command):
    """Write mmseg_segman_autoload.pth (mmseg_segman/_autoload.py) into site-packages.

    A plain build puts it at the root of build_lib, hence of the wheel. An editable
    install (PEP 660) ignores build_lib, so there it goes straight into the unpacked
    editable wheel, which is the install command's install_lib during that build.
    """
    description = 'write the autoload .pth file'
    user_options = []
    editable_mode = False

    def initialize_options(self):
        self.build_lib = None

    def finalize_options(self):
        self.set_undefined_options('build', ('build_lib', 'build_lib'))

    def _target(self):
        root = (self.get_finalized_command('install').install_lib
                if self.editable_mode else self.build_lib)
        return os.path.join(root, self._constant('PTH_NAME'))

    @staticmethod
    def _constant(name):
        scope = {}  # the module defines constants and functions only (standard library)
        with open('mmseg_segman/_autoload.py') as f:
            exec(f.read(), scope)
        return scope[name]

    def run(self):
        target = self._target()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'w') as f:
            f.write(self._constant('PTH_CONTENT'))

    def get_outputs(self):
        return [self._target()]


class build_with_autoload(build):
    sub_commands = build.sub_commands + [('build_autoload_pth', None)]


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
    python_requires='>=3.8',
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={
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
    cmdclass={'build': build_with_autoload, 'build_autoload_pth': build_autoload_pth,
              'build_py': build_py_with_mim},
)
