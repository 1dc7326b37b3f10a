"""The project shares no long passage with the upstream StyleGAN2-ADA / StyleGAN3 / MixDL sources.

The checker compares token runs against hashes of the upstream text. It lives outside the
repository (a plain clone does not have it), so this test skips when it is missing.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKER = os.path.join(os.path.dirname(REPO), 'shared', 'cleanroom', 'check.py')


def test_no_long_passage_shared_with_upstream():
    if not os.path.isfile(CHECKER):
        pytest.skip(f'clean-room checker not found at {CHECKER} (not part of a plain clone)')
    result = subprocess.run([sys.executable, CHECKER], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f'clean-room check failed:\n{result.stdout}\n{result.stderr}'
