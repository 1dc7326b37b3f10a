"""Tests for bench/mixdl_grad_balance.py on a 16 px tiny network."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location('mixdl_grad_balance', os.path.join(ROOT, 'bench', 'mixdl_grad_balance.py'))
balance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(balance)


def test_both_terms_pull_on_G_and_a_seed_repeats_exactly():
    dist, patch = balance.gradient_norms(16, 256, 16, seed=0, z_dim=16, mapping_layers=2)
    assert dist > 0 and patch > 0
    assert balance.gradient_norms(16, 256, 16, seed=0, z_dim=16, mapping_layers=2) == (dist, patch)
    assert balance.gradient_norms(16, 256, 16, seed=1, z_dim=16, mapping_layers=2) != (dist, patch)


def test_widths_parse_and_bad_text_is_one_line():
    assert balance.parse_widths('1024x64, 16384x512') == [(1024, 64), (16384, 512)]
    for bad in ('', '1024', '1024x', 'ax64', '0x64'):
        with pytest.raises(SystemExit, match='--widths='):
            balance.parse_widths(bad)
