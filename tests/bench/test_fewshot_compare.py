"""Tests for bench/fewshot_compare.py's memorisation panel and option parsing (training itself is covered elsewhere)."""
import importlib.util
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch

from training import networks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_script():
    spec = importlib.util.spec_from_file_location('fewshot_compare', os.path.join(ROOT, 'bench', 'fewshot_compare.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load_script()


def _tiny_generator():
    torch.manual_seed(0)
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval()


def _samples(G, seeds):
    z = torch.from_numpy(np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds])).float()
    with torch.no_grad():
        return G(z, torch.zeros(len(seeds), 0), truncation_psi=1, noise_mode='const').clamp(-1, 1)


def test_nearest_panel_finds_a_memorised_sample_and_lays_out_pairs_of_rows():
    G = _tiny_generator()
    seeds = list(range(8))
    fakes = _samples(G, seeds)
    # Training set: a copy of sample 5 (as uint8) hidden among random images.
    rng = np.random.RandomState(1)
    reals = torch.from_numpy(rng.randint(0, 256, size=(6, 3, 16, 16)).astype(np.uint8))
    reals[3] = (fakes[5] * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    grid, best, rms = compare.nearest_real_panel(G, reals, seeds=seeds, cols=4)

    assert grid.shape == (2 * 2 * 16, 4 * 16, 3) and grid.dtype == np.uint8
    assert best[5] == 3 and rms[5] < 0.01
    assert float(rms.min()) == float(rms[5]) and float(rms.max()) > 0.1
    # Row 0 holds samples 0-3, row 1 their nearest reals, row 2 samples 4-7, row 3 theirs: sample 5 sits at
    # row 2, column 1 and its neighbour (real 3) right below it.
    tile = lambda r, c: grid[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].astype(int)
    assert np.array_equal(tile(3, 1), reals[3].permute(1, 2, 0).numpy().astype(int))
    assert np.abs(tile(2, 1) - tile(3, 1)).max() <= 1
    assert np.array_equal(tile(1, 2), reals[best[2]].permute(1, 2, 0).numpy().astype(int))


def test_nearest_panel_rejects_a_training_set_at_another_resolution():
    G = _tiny_generator()
    reals = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(AssertionError, match='do not match G output'):
        compare.nearest_real_panel(G, reals, seeds=range(8), cols=8)


def test_save_nearest_panel_reads_the_training_set_from_snapshot_kwargs(tmp_path):
    G = _tiny_generator()
    folder = tmp_path / 'reals'
    folder.mkdir()
    rng = np.random.RandomState(2)
    for i in range(5):
        PIL.Image.fromarray(rng.randint(0, 256, size=(16, 16, 3)).astype(np.uint8)).save(folder / f'{i}.png')
    kwargs = dict(class_name='training.dataset.ImageFolderDataset', path=str(folder), use_labels=False, max_size=5,
                  xflip=True, resolution=16)
    reals = compare.load_reals(kwargs)
    assert reals.shape == (5, 3, 16, 16) and reals.dtype == torch.uint8  # stored images only: no x-flipped copies
    stored = {np.asarray(PIL.Image.open(folder / f'{i}.png')).tobytes() for i in range(5)}
    assert {image.permute(1, 2, 0).numpy().tobytes() for image in reals} == stored
    path = tmp_path / 'panel.png'
    summary = compare.save_nearest_real_panel(G, kwargs, str(path))
    assert PIL.Image.open(path).size == (8 * 16, 4 * 16)
    assert 1 <= summary['nearest_distinct'] <= 5 and summary['nearest_rms_mean'] > 0


@pytest.mark.parametrize('text, expected', [('baseline,mixdl', ['baseline', 'mixdl']), (' mixdl ', ['mixdl']),
                                            ('mixdl_g100,baseline', ['mixdl_g100', 'baseline'])])
def test_parse_arms_keeps_the_order_given(text, expected):
    arms = compare.parse_arms(text)
    assert list(arms) == expected
    assert arms['mixdl' if 'mixdl' in arms else expected[0]] == compare.ARMS['mixdl' if 'mixdl' in arms else expected[0]]


def test_parse_arms_adds_custom_arms_with_their_options_after_the_named_ones():
    arms = compare.parse_arms('baseline', ['g30=--mixdl=1  --mixdl-g=30', 'int4=--mixdl=1 --mixdl-interval=4'])
    assert arms == {'baseline': [], 'g30': ['--mixdl=1', '--mixdl-g=30'], 'int4': ['--mixdl=1', '--mixdl-interval=4']}
    assert compare.parse_arms('', ['solo=--mixdl=1']) == {'solo': ['--mixdl=1']}
    assert compare.ARMS['mixdl_keepadv'] == ['--mixdl=1', '--mixdl-keep-adv=1']


@pytest.mark.parametrize('text', ['baseline,baseline', 'styleganxl', ''])
def test_parse_arms_refuses_unknown_or_repeated_names(text):
    with pytest.raises(SystemExit, match='--arms='):
        compare.parse_arms(text)


@pytest.mark.parametrize('custom', [['g30'], ['g30='], ['bad name=--mixdl=1'], ['baseline=--mixdl=1']])
def test_parse_arms_refuses_custom_arms_without_options_or_with_a_taken_label(custom):
    with pytest.raises(SystemExit, match='--arm='):
        compare.parse_arms('baseline', custom)


def test_item_caps_and_sample_counts():
    assert compare.parse_item_caps(None) == (None, {})
    caps = compare.parse_item_caps('500,ppl_smooth1k=100')
    assert caps == (500, {'ppl_smooth1k': 100})
    assert compare.sample_counts(['fidelity_vgg1k', 'modes500', 'ppl_smooth1k'], caps) == \
        {'fidelity_vgg1k': 500, 'modes500': 500, 'ppl_smooth1k': 100}
    assert compare.sample_counts(['modes500', 'lpips_div1k'], (None, {'lpips_div1k': 2000})) == \
        {'modes500': 500, 'lpips_div1k': 1000}
    for bad in ('0', 'x', 'ppl_smooth1k=', 'a b=3'):
        with pytest.raises(SystemExit, match='--item-cap='):
            compare.parse_item_caps(bad)


def test_snapshots_to_evaluate_reads_kimg_from_names_and_skips_kimg_0(tmp_path):
    for name in ('network-snapshot-000000.pkl', 'network-snapshot-000002.pkl', 'network-snapshot-000001.pkl',
                 'network-snapshot-000001.500.pkl', 'fakes000002.png'):
        (tmp_path / name).write_bytes(b'')
    found = compare.snapshots_to_evaluate(str(tmp_path))
    assert list(found) == [1, 1.5, 2]
    assert found[1.5].endswith('network-snapshot-000001.500.pkl')
    assert list(compare.snapshots_to_evaluate(str(tmp_path), [2, 0])) == [0, 2]
    with pytest.raises(SystemExit, match='no snapshot at kimg 3'):
        compare.snapshots_to_evaluate(str(tmp_path), [3])


def test_smoothness_cv_is_derived_from_mean_and_std():
    out = compare.with_derived({'ppl_smooth1k_mean': 0.02, 'ppl_smooth1k_std': 0.005, 'lpips_div1k': 0.3})
    assert out['ppl_smooth1k_cv'] == pytest.approx(0.25) and out['lpips_div1k'] == 0.3
    assert 'pix_smooth1k_cv' not in out


def _fake_run(tmp_path, label, sec_per_kimg):
    run_dir = tmp_path / label
    run_dir.mkdir()
    (run_dir / 'stats.jsonl').write_text(
        '\n'.join(json.dumps({'Timing/sec_per_kimg': {'num': 1, 'mean': v}}) for v in (sec_per_kimg, sec_per_kimg + 2)))
    return dict(run_dir=str(run_dir), seconds=90.0, fakes=f'{label}-fakes.png', strip=f'{label}-interp.png',
                nearest=f'{label}-nearest.png', panel=dict(nearest_distinct=7, nearest_rms_mean=0.3))


def test_report_has_commands_curves_and_a_table_per_snapshot(tmp_path):
    arms = compare.parse_arms('baseline', ['g100=--mixdl=1 --mixdl-g=100'])
    runs = {'baseline': _fake_run(tmp_path, 'baseline', 40.0), 'g100': _fake_run(tmp_path, 'g100', 50.0)}
    curves = {'baseline': {1: {'fidelity_vgg1k_precision': 0.5, 'lpips_div1k': 0.25},
                           2: {'fidelity_vgg1k_precision': 0.625, 'lpips_div1k': 0.3}},
              'g100': {1: {'fidelity_vgg1k_precision': 0.125, 'lpips_div1k': 0.375},
                       2: {'fidelity_vgg1k_precision': 0.75, 'lpips_div1k': 0.4375}}}
    info = dict(data='obama/', images=10, res=32, cfg='fewshot', kimg=2, seed=7, device='cpu', smoke=False,
                counts={'fidelity_vgg1k': 500, 'lpips_div1k': 250}, command='python bench/fewshot_compare.py --x=1',
                train_command='python train.py --outdir=<outdir>/<arm> --kimg=2 --seed=7')
    path = tmp_path / 'report.md'
    compare.write_report(str(path), info, arms, runs, curves)
    text = path.read_text()
    lines = text.splitlines()
    assert '10 training images' in text and 'seed 7' in text and '2 kimg per arm' in text
    assert 'fidelity_vgg1k 500, lpips_div1k 250' in text
    assert '    python bench/fewshot_compare.py --x=1' in lines
    assert '    python train.py --outdir=<outdir>/<arm> --kimg=2 --seed=7' in lines
    assert '    python train.py --outdir=<outdir>/<arm> --kimg=2 --seed=7 --mixdl=1 --mixdl-g=100' in lines
    # Curve table: a row per arm, a column per kimg.
    start = lines.index('`fidelity_vgg1k_precision` (higher is better)')
    assert lines[start + 2] == '| arm | kimg 1 | kimg 2 |'
    assert lines[start + 4] == '| baseline | 0.5000 | 0.6250 |'
    assert lines[start + 5] == '| g100 | 0.1250 | 0.7500 |'
    # One table per snapshot: a row per metric, a column per arm.
    assert '| kimg 2: metric | better | baseline | g100 |' in lines
    assert '| lpips_div1k | higher | 0.3000 | 0.4375 |' in lines
    assert '| Timing/sec_per_kimg (mean over ticks) | 41.0 | 51.0 |' in lines
    assert '| nearest_distinct | 7 | 7 |' in lines
    assert not list(tmp_path.glob('.report.md.*'))  # written through a temporary name


def test_results_json_keeps_curves_by_kimg(tmp_path):
    runs = {'baseline': _fake_run(tmp_path, 'baseline', 40.0)}
    path = tmp_path / 'results.json'
    compare.write_results(str(path), {'baseline': {1.5: {'modes500': 4}}}, runs)
    data = json.loads(path.read_text())
    assert data['baseline']['curves'] == {'1.5': {'modes500': 4}} and data['baseline']['panel']['nearest_distinct'] == 7
