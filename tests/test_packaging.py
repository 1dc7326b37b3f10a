"""Packaging: the wheel installs into a fresh venv, every console command answers --help from outside the
checkout, the pickle import names resolve to the installed copy, and the demo dataset travels with it."""

import os
import shutil
import subprocess
import sys

import pytest

tomllib = pytest.importorskip('tomllib', reason='reading pyproject.toml needs Python 3.11+')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Folders that are never part of a build (caches, run outputs, earlier builds).
_NOT_SOURCES = shutil.ignore_patterns('.git', 'build', 'dist', '*.egg-info', '__pycache__', '.pytest_cache', 'runs',
                                      'out', '.whl', '.gl', '.device_build')


def _scripts():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        return tomllib.load(f)['project']['scripts']


def test_every_script_has_a_prefixed_command_that_exists():
    scripts = _scripts()
    assert scripts and all(name.startswith('sg2mixdl-') for name in scripts)
    import importlib
    for target in scripts.values():
        module_name, function_name = target.split(':')
        assert hasattr(importlib.import_module(module_name), function_name), target
    covered = {target.split(':')[0] for target in scripts.values()}
    assert {'train', 'generate', 'projector', 'style_mixing', 'calc_metrics', 'dataset_tool', 'legacy'} <= covered


def test_every_top_level_script_is_packaged():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        modules = set(tomllib.load(f)['tool']['setuptools']['py-modules'])
    scripts = {name[:-3] for name in os.listdir(ROOT) if name.endswith('.py') and name != 'setup.py'}
    assert scripts <= modules, f'add {sorted(scripts - modules)} to py-modules in pyproject.toml'


def test_demo_dataset_is_found_in_a_checkout():
    from stylegan2_ada_mixdl import demo_data
    path = demo_data.demo_dataset_path()
    assert path == os.path.join(ROOT, 'data', 'demo', demo_data.DEFAULT_DEMO)
    assert demo_data.demo_dataset_path('no-such-file.zip') is None


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.slow
def test_wheel_installs_and_every_command_runs_outside_the_checkout(tmp_path):
    source = tmp_path / 'src'
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES)   # build from a copy: no stale build/ in the checkout
    built = _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                  str(tmp_path / 'dist'), str(source)], cwd=tmp_path)
    if built.returncode != 0 and 'No module named pip' in built.stderr:
        pytest.skip('pip is not available to build the wheel')
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / 'dist').glob('*.whl')

    venv = tmp_path / 'venv'
    made = _run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', str(venv)])
    if made.returncode != 0:
        pytest.skip(f'cannot create a venv here: {made.stderr.strip().splitlines()[-1:]}')
    bin_dir = venv / ('Scripts' if os.name == 'nt' else 'bin')
    python = bin_dir / ('python.exe' if os.name == 'nt' else 'python')
    env = {key: value for key, value in os.environ.items() if key not in ('PYTHONPATH', 'PYTHONHOME')}
    # The venv sees this interpreter's packages (torch is not downloaded again), including its pip.
    installed = _run([str(python), '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', str(wheel)], env=env,
                     cwd=tmp_path)
    if installed.returncode != 0 and 'No module named pip' in installed.stderr:
        pytest.skip('pip is not importable from the venv')
    assert installed.returncode == 0, installed.stderr

    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    probe = ('import os, dnnlib, torch_utils, training, legacy, metrics, stylegan2_ada_mixdl\n'
             'from stylegan2_ada_mixdl import demo_data\n'
             'from training import networks\n'
             'print(os.path.dirname(legacy.__file__)); print(os.path.dirname(os.path.dirname(dnnlib.__file__)))\n'
             'print(demo_data.demo_dataset_path())\n')
    found = _run([str(python), '-c', probe], env=env, cwd=outside)
    assert found.returncode == 0, found.stderr
    legacy_dir, dnnlib_parent, demo = found.stdout.splitlines()
    site = os.path.realpath(legacy_dir)
    assert site.startswith(os.path.realpath(str(venv))), 'legacy must come from the installed wheel'
    assert os.path.realpath(dnnlib_parent) == site
    assert demo.startswith(site) and demo.endswith(os.path.join('demo', 'emoji16-64.zip')) and os.path.isfile(demo)

    for command in _scripts():
        executable = bin_dir / (command + ('.exe' if os.name == 'nt' else ''))
        helped = _run([str(executable), '--help'], env=env, cwd=outside)
        assert helped.returncode == 0, f'{command}: {helped.stderr}'
        assert 'Usage:' in helped.stdout and '--help' in helped.stdout, command

    # The installed train command finds its demo set with no --data (package data, not a checkout).
    demo_run = _run([str(bin_dir / ('sg2mixdl-train' + ('.exe' if os.name == 'nt' else ''))), '--dry-run', '--device=cpu',
                     f'--outdir={tmp_path / "runs"}'], env=env, cwd=outside)
    assert demo_run.returncode == 0, demo_run.stderr
    assert demo_run.stdout.startswith('No --data given: training on the bundled demo set')
    (dataset_line,) = [line for line in demo_run.stdout.splitlines() if line.startswith('Dataset:')]
    demo_zip = dataset_line.split(None, 1)[1]
    assert os.path.realpath(demo_zip).startswith(site) and os.path.isfile(demo_zip), dataset_line
    assert not (tmp_path / 'runs').exists()  # --dry-run writes nothing
