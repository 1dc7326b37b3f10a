"""Faults in the training loop, injected the way they happen: a kill while a training state is written, a snapshot
replaced under its state, resume pickles of another resolution or architecture, damaged pickles, a full disk."""

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch

from tests._faults import foreign_pickle_bytes
from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)
from tests.training.test_training_loop import TINY_NET
from tests.training.test_training_loop import loop_kwargs as base_loop_kwargs
from training import networks
from training import training_loop as tl
from training.loss import StyleGAN2Loss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_images(folder, resolution, count=8):
    folder.mkdir()
    rng = np.random.RandomState(resolution)
    for i in range(count):
        PIL.Image.fromarray((rng.rand(resolution, resolution, 3) * 255).astype(np.uint8)).save(folder / f'{i}.png')
    return str(folder)


@pytest.fixture(scope='module')
def images16(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp('faults') / 'img16', 16)


def loop_kwargs(run_dir, image_dir, **overrides):
    """test_training_loop's tiny run with a tick (and a snapshot) after every minibatch of 8; the dataset's
    resolution is read from the images, so a folder of 32 px images makes a 32 px run."""
    kwargs = base_loop_kwargs(run_dir, image_dir, total_kimg=0.016, kimg_per_tick=0.008, random_seed=5)
    del kwargs['training_set_kwargs']['resolution']
    kwargs.update(overrides)
    return kwargs


def load_pickle(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def assert_same_networks(a, b):
    for key in ('G', 'D', 'G_ema', 'augment_pipe'):
        for (name, x), (_, y) in zip(a[key].state_dict().items(), b[key].state_dict().items()):
            assert torch.equal(x, y), f'{key}.{name} differs'


@pytest.fixture(scope='module')
def baseline_run(tmp_path_factory, images16):
    """Snapshots and states at 8 and 16 images."""
    run_dir = tmp_path_factory.mktemp('faults') / '00000-base'
    tl.training_loop(**loop_kwargs(run_dir, images16))
    return run_dir

#----------------------------------------------------------------------------
# Snapshot names, the state's record of its snapshot, and a kill mid-write.

KILLED_CHILD = r'''
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from training import training_loop as tl

kill_at = int(os.environ['KILL_AT_STATE_WRITE'])
real_save, calls = torch.save, [0]

def save_then_die(obj, f, *args, **kwargs):
    # torch.save also runs inside pickle.dumps (tensor storages); count only the training states.
    is_state = isinstance(obj, dict) and obj.get('format') == tl.TRAINING_STATE_FORMAT
    calls[0] += is_state
    if is_state and calls[0] == kill_at:
        f.write(b'PK\x03\x04 the first bytes of a state')  # what a kill -9 halfway through leaves
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save_then_die
with open(sys.argv[1]) as f:
    tl.training_loop(**json.load(f))
'''


@pytest.mark.skipif(not hasattr(os, 'kill') or sys.platform == 'win32', reason='needs SIGKILL')
def test_kill_while_a_state_is_written_then_resume_continues_exactly(tmp_path, images16, capsys):
    # Ticks of 8 images, a snapshot at each: four snapshots inside kimg 0, which must not share a name.
    straight = tmp_path / 'straight'
    last = tl.training_loop(**loop_kwargs(straight, images16, total_kimg=0.032))
    pickles = sorted(name for name in os.listdir(straight) if name.startswith('network-snapshot-'))
    assert pickles == [f'network-snapshot-000000.{n:03d}.pkl' for n in (8, 16, 24, 32)]
    assert sorted(name for name in os.listdir(straight) if name.startswith('training-state-')) == \
        [f'training-state-000000.{n:03d}.pt' for n in (8, 16, 24, 32)]

    # The same run in a child process, killed with SIGKILL while writing its third state (at 24 images).
    runs = tmp_path / 'runs'
    with open(tmp_path / 'kwargs.json', 'w') as f:
        json.dump(loop_kwargs(runs / '00000-killed', images16, total_kimg=0.032), f)
    env = dict(os.environ, KILL_AT_STATE_WRITE='3', PYTHONPATH=ROOT)
    child = subprocess.run([sys.executable, '-c', KILLED_CHILD, str(tmp_path / 'kwargs.json')], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == -9, child.stderr[-2000:]
    killed = runs / '00000-killed'
    leftovers = [name for name in os.listdir(killed) if name.endswith('.tmp')]
    assert len(leftovers) == 1 and leftovers[0].startswith('.training-state-000000.024.pt.')
    assert (killed / 'network-snapshot-000000.024.pkl').exists() and not (killed / 'training-state-000000.024.pt').exists()

    # The newest complete pair is the one at 16 images; the pickle of 24 images without its state is passed over.
    state_path = tl.find_latest_training_state(str(runs))
    assert state_path == str(killed / 'training-state-000000.016.pt')
    capsys.readouterr()
    resumed = tl.training_loop(**loop_kwargs(runs / '00001-resumed', images16, total_kimg=0.032, resume_state=state_path))
    assert 'temporary file(s) from an interrupted write are ignored' in capsys.readouterr().out
    assert os.path.basename(resumed) == 'network-snapshot-000000.032.pkl'
    assert_same_networks(load_pickle(last), load_pickle(resumed))


def test_a_state_refuses_a_snapshot_that_was_replaced(tmp_path, baseline_run):
    run = tmp_path / 'run'
    shutil.copytree(baseline_run, run)
    state_path = str(run / 'training-state-000000.016.pt')
    state, snapshot = tl.load_training_state(state_path)
    assert state['snapshot_sha256'] == tl.file_sha256(snapshot) and state['cur_nimg'] == 16

    shutil.copyfile(run / 'network-snapshot-000000.008.pkl', snapshot)  # a valid pickle, but not this state's
    with pytest.raises(tl.TrainingError) as info:
        tl.load_training_state(state_path)
    message = str(info.value)
    assert '\n' not in message and 'does not belong to' in message and 'network-snapshot-000000.016.pkl' in message


def test_snapshot_names_keep_whole_kimg_when_snapshots_are_a_kimg_apart():
    assert tl.snapshot_name(1032) == 'network-snapshot-000001.pkl'
    assert tl.training_state_name(1032) == 'training-state-000001.pt'
    assert tl.snapshot_name(1032, sub_kimg=True) == 'network-snapshot-000001.032.pkl'
    assert tl.kimg_label(250, sub_kimg=True) == '000000.250'

#----------------------------------------------------------------------------
# Weights-only resume: what must match is checked before copying; what is not copied is named.

def write_snapshot(path, resolution=16, G_kwargs=None, D_architecture='resnet'):
    sizes = dict(c_dim=0, img_resolution=resolution, img_channels=3)
    G = networks.Generator(**(G_kwargs or TINY_NET), **sizes).eval()
    D = networks.Discriminator(channel_base=256, channel_max=32, architecture=D_architecture,
                               epilogue_kwargs=dict(mbstd_group_size=4), **sizes).eval()
    with open(path, 'wb') as f:
        pickle.dump(dict(training_set_kwargs={}, G=G, D=D, G_ema=G, augment_pipe=None), f)
    return str(path)


def test_resume_from_a_16px_snapshot_into_a_32px_run_is_refused(tmp_path):
    images32 = make_images(tmp_path / 'img32', 32)
    pkl = write_snapshot(tmp_path / 'small.pkl', resolution=16)
    with pytest.raises(tl.TrainingError) as info:
        tl.training_loop(**loop_kwargs(tmp_path / 'run', images32, resume_pkl=pkl))
    message = str(info.value)
    assert '\n' not in message and "the pickle's G has resolution 16, the network being trained has 32" in message
    assert not any(name.startswith('network-snapshot') for name in os.listdir(tmp_path / 'run'))


def test_resume_from_another_architecture_is_refused(tmp_path, images16):
    pkl = write_snapshot(tmp_path / 'orig.pkl', D_architecture='orig')
    with pytest.raises(tl.TrainingError, match="the pickle's D has architecture orig, the network being trained has resnet"):
        tl.training_loop(**loop_kwargs(tmp_path / 'run', images16, resume_pkl=pkl))


def test_weights_only_resume_names_every_tensor_it_could_not_copy(tmp_path, images16, capsys):
    deeper = dict(TINY_NET, mapping_kwargs=dict(num_layers=3))
    pkl = write_snapshot(tmp_path / 'deeper.pkl', G_kwargs=deeper)
    tl.training_loop(**loop_kwargs(tmp_path / 'run', images16, resume_pkl=pkl, total_kimg=0.008, network_snapshot_ticks=None))
    out = capsys.readouterr().out
    assert "Note: --resume copied G partly: 2 tensor(s) of the pickle's G have no place here (mapping.fc2.weight, mapping.fc2.bias)" in out
    assert "Note: --resume copied G_ema partly" in out

    # The other way round: the network being trained has tensors the pickle lacks. An exact resume refuses both.
    saved = load_pickle(pkl)['G']
    shallow = networks.Generator(c_dim=0, img_resolution=16, img_channels=3, **TINY_NET)
    notes = []
    tl._copy_resumed_weights(saved, shallow, 'G', say=notes.append)
    assert notes and 'mapping.fc2.weight' in notes[0]
    with pytest.raises(tl.TrainingError, match='does not match the networks being trained: 2 tensor'):
        tl._copy_resumed_weights(saved, shallow, 'G', exact=True)
    with pytest.raises(tl.TrainingError, match=r'2 G tensor\(s\) not in the pickle keep their initialisation'):
        tl._copy_resumed_weights(shallow, networks.Generator(c_dim=0, img_resolution=16, img_channels=3, **deeper), 'G', exact=True)


def tensorflow_era_pickle_bytes():
    """A dict of networks whose class is the TensorFlow releases' dnnlib.tflib.network.Network."""
    class Network(dict):
        pass
    stand_in = types.ModuleType('tf_stand_in_xyz')
    stand_in.Network = Network
    Network.__module__, Network.__qualname__ = stand_in.__name__, 'Network'
    sys.modules[stand_in.__name__] = stand_in  # pickle looks the class up by its module while writing
    try:
        data = pickle.dumps(dict(G=Network(), D=Network(), Gs=Network()), protocol=2)
    finally:
        del sys.modules[stand_in.__name__]
    return data.replace(b'tf_stand_in_xyz', b'dnnlib.tflib.network')


@pytest.mark.parametrize('content, cause', [
    (b'', 'empty or ends early'),
    (None, 'ends early'),  # the first half of a real snapshot
    (foreign_pickle_bytes(), 'refers to code that is not available here'),
    (b'this is no pickle at all', 'not a pickle'),
    ('tensorflow', 'TensorFlow-era network pickles are not supported'),
])
def test_unreadable_resume_pickles_are_one_line(tmp_path, baseline_run, content, cause):
    path = tmp_path / 'bad.pkl'
    if content is None:
        whole = (baseline_run / 'network-snapshot-000000.008.pkl').read_bytes()
        content = whole[:len(whole) // 2]
    elif content == 'tensorflow':
        content = tensorflow_era_pickle_bytes()
    path.write_bytes(content)
    with pytest.raises(tl.TrainingError) as info:
        tl.read_snapshot(str(path))
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'--resume: {path}: ') and cause in message


class LossWithHead(StyleGAN2Loss):
    """A plug-in with one extra module trained with D, so D's optimiser has more parameters than the baseline's."""
    snapshot_key = 'head'

    def __init__(self, device, **kwargs):
        super().__init__(device, **kwargs)
        self.head = torch.nn.Linear(3, 2).to(device)

    def extra_modules(self):
        return {'head': self.head}


def test_exact_resume_with_another_plugin_is_one_line(tmp_path, images16, baseline_run):
    state_path = str(baseline_run / 'training-state-000000.008.pt')
    with pytest.raises(tl.TrainingError) as info:
        tl.training_loop(**loop_kwargs(tmp_path / 'run', images16, resume_state=state_path,
                                       loss_kwargs=dict(class_name=f'{__name__}.LossWithHead', r1_gamma=1.0)))
    message = str(info.value)
    assert '\n' not in message and 'does not fit this run (saved with loss training.loss.StyleGAN2Loss' in message
    assert 'resume with the options the run was trained with' in message

#----------------------------------------------------------------------------
# A full disk while the state is written; the NaN hint.

def test_full_disk_while_writing_a_state_names_the_file_and_leaves_no_temporary(tmp_path, images16, monkeypatch):
    real_save = torch.save

    def disk_full_for_states(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get('format') == tl.TRAINING_STATE_FORMAT:
            f.write(b'PK')
            raise OSError(errno.ENOSPC, 'No space left on device')  # a failing write() names no file
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, 'save', disk_full_for_states)
    run_dir = tmp_path / 'run'
    with pytest.raises(OSError) as info:
        tl.training_loop(**loop_kwargs(run_dir, images16))
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(run_dir / 'training-state-000000.008.pt')
    assert not [name for name in os.listdir(run_dir) if name.endswith('.tmp')]


def test_nan_hint_names_options_that_exist():
    from stylegan2_ada_mixdl.mixdl import MixDLLoss
    baseline = tl.divergence_hint(object.__new__(StyleGAN2Loss))
    assert '--gamma' in baseline and '--batch' in baseline and 'learning rate' not in baseline
    assert '--mixdl-g / --mixdl-d' in tl.divergence_hint(object.__new__(MixDLLoss))
