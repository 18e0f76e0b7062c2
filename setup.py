from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open('mmseg_segman/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(path):
    with open(path) as f:
        return [ln.split('#')[0].strip() for ln in f if ln.split('#')[0].strip()]


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
    },
    license='Apache-2.0',
)
