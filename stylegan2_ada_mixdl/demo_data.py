"""Where the bundled demo dataset lives: data/demo/ in a checkout, or the stylegan2_ada_mixdl.demo package once installed."""

import os

DEFAULT_DEMO = 'emoji16-64.zip'

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# A checkout keeps the files in data/demo/ beside this package; an installed wheel carries them as package
# data in stylegan2_ada_mixdl/demo/ (setup.py maps the one folder onto the other).
SEARCH_DIRS = (os.path.join(os.path.dirname(_PACKAGE_DIR), 'data', 'demo'), os.path.join(_PACKAGE_DIR, 'demo'))


def demo_dataset_path(name=DEFAULT_DEMO):
    """Absolute path of the bundled demo file `name` (e.g. 'emoji16-64.zip'), or None when it is absent."""
    for folder in SEARCH_DIRS:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None
