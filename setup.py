"""Build script. The project is described in pyproject.toml; this file adds only what pyproject.toml cannot
say: the packages found automatically plus the bundled demo dataset, which lives in data/demo/ in a checkout
and is installed as package data of stylegan2_ada_mixdl.demo (see stylegan2_ada_mixdl/demo_data.py)."""

from setuptools import find_packages, setup

CODE_PACKAGES = ['dnnlib', 'torch_utils', 'training', 'metrics', 'stylegan2_ada_mixdl']

setup(
    packages=find_packages(include=[pattern for name in CODE_PACKAGES for pattern in (name, f'{name}.*')])
    + ['stylegan2_ada_mixdl.demo'],
    package_dir={'stylegan2_ada_mixdl.demo': 'data/demo'},
    package_data={'torch_utils.ops': ['*.cu', '*.cpp', '*.h'], 'stylegan2_ada_mixdl.demo': ['*.zip', '*.md']},
)
