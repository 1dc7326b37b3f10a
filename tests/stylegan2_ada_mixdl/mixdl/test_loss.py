"""Tests for MixDLLoss: schedule, gradient routing, baseline equivalence and plug-in state, on tiny CPU networks."""
import copy

import pytest
import torch

from stylegan2_ada_mixdl.mixdl import MixDLLoss
from training import networks
from training.loss import StyleGAN2Loss

RES, BATCH, ZDIM = 16, 4, 16


def _networks(seed=0):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=ZDIM, c_dim=0, w_dim=ZDIM, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    D = networks.Discriminator(c_dim=0, img_resolution=RES, img_channels=3, channel_base=128, channel_max=16,
                               epilogue_kwargs=dict(mbstd_group_size=2))
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def _make_loss(G, D, cls=MixDLLoss, **kwargs):
    kwargs.setdefault('r1_gamma', 1.0)
    if cls is MixDLLoss:
        kwargs.setdefault('seed', 123)
    return cls(device='cpu', G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, **kwargs)


def _inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return dict(real_img=torch.rand(BATCH, 3, RES, RES, generator=gen) * 2 - 1, real_c=torch.zeros(BATCH, 0),
                gen_z=torch.randn(BATCH, ZDIM, generator=gen), gen_c=torch.zeros(BATCH, 0))


def _grads(module):
    return {name: p.grad for name, p in module.named_parameters()}


def _nonzero(grads):
    return {name for name, g in grads.items() if g is not None and g.abs().sum() > 0}


def _all_trainable(*modules):
    for module in modules:
        module.requires_grad_(True)
        for p in module.parameters():
            p.grad = None


def test_every_interval_th_minibatch_is_mixdl():
    G, D = _networks()
    loss = _make_loss(G, D, interval=3)
    assert [loss.is_mixdl_minibatch(i) for i in range(7)] == [True, False, False, True, False, False, True]
    off = _make_loss(G, D, lambda_G=0, lambda_D=0, patch_discrimination=False)
    assert not any(off.is_mixdl_minibatch(i) for i in range(4))


def test_extras_match_discriminator_and_stay_out_of_G_and_D():
    G, D = _networks()
    names_before = (sorted(G.state_dict()), sorted(D.state_dict()))
    loss = _make_loss(G, D)
    assert list(loss.extra_modules()) == ['extras'] and loss.snapshot_key == 'mixdl'
    extras = loss.extras
    assert extras.feature_dim == D.b4.fc.weight.shape[0] == 16
    assert extras.patch_layer_names == ['b8.conv1']  # 16 px has no 1/16 map: smallest block conv output
    assert (sorted(G.state_dict()), sorted(D.state_dict())) == names_before
    assert loss.synthesis_layers == ['b4.conv1', 'b8.conv0', 'b8.conv1', 'b16.conv0', 'b16.conv1']


@pytest.mark.parametrize('similarity', ['cosine', 'centred'])
def test_generator_distance_uses_the_chosen_similarity(similarity, monkeypatch):
    import stylegan2_ada_mixdl.mixdl.loss as mixdl_loss
    from stylegan2_ada_mixdl.mixdl import distance
    expected = {'cosine': distance.cosine_similarity_matrix, 'centred': distance.centred_cosine_similarity_matrix}
    seen = []
    real = mixdl_loss.layered_distance_loss
    monkeypatch.setattr(mixdl_loss, 'layered_distance_loss',
                        lambda *args, **kwargs: seen.append(kwargs.get('similarity')) or real(*args, **kwargs))
    G, D = _networks()
    loss = _make_loss(G, D, g_similarity=similarity)
    inputs = _inputs()
    terms = loss.generator_terms(inputs['gen_z'], inputs['gen_c'], loss.draw_coefficients(BATCH), patch=False)
    assert seen == [expected[similarity]] and torch.isfinite(terms['G_dist'])


def test_centred_and_plain_generator_distances_differ_on_the_same_draws():
    G, D = _networks()
    values = {}
    for similarity in ('cosine', 'centred'):
        loss = _make_loss(G, D, g_similarity=similarity)
        inputs = _inputs()
        terms = loss.generator_terms(inputs['gen_z'], inputs['gen_c'], loss.draw_coefficients(BATCH), patch=False)
        values[similarity] = terms['G_dist'].item()
    assert values['cosine'] > 0 and values['centred'] > 0 and values['cosine'] != pytest.approx(values['centred'])


def test_generator_distance_reaches_only_G():
    G, D = _networks()
    loss = _make_loss(G, D)
    _all_trainable(G, D, loss.extras)
    inputs = _inputs()
    coefs = loss.draw_coefficients(BATCH)
    terms = loss.generator_terms(inputs['gen_z'], inputs['gen_c'], coefs, distance=True, patch=False)
    terms['G_dist'].backward()
    assert terms['G_dist'].item() > 0
    assert _nonzero(_grads(G)), 'G gets a gradient from L_G_dist'
    assert any(name.startswith('mapping.') for name in _nonzero(_grads(G)))  # anchors mix ws from the mapping
    assert not _nonzero(_grads(D)) and not _nonzero(_grads(loss.extras))


def test_discriminator_distance_reaches_only_D_and_projection():
    G, D = _networks()
    loss = _make_loss(G, D)
    _all_trainable(G, D, loss.extras)
    inputs = _inputs()
    terms = loss.discriminator_terms(coefs=loss.draw_coefficients(BATCH), distance=True, patch=False, **inputs)
    terms['D_dist'].backward()
    assert terms['D_dist'].item() > 0
    assert not _nonzero(_grads(G))
    d_names = _nonzero(_grads(D))
    assert 'b4.fc.weight' in d_names and 'b16.conv0.weight' in d_names
    assert 'b4.out.weight' not in d_names  # the penultimate feature is read before the output layer
    assert _nonzero(_grads(loss.extras)) == {'proj.weight', 'proj.bias'}


def test_patch_heads_get_gradients_only_on_mixdl_minibatches():
    G, D = _networks()
    loss = _make_loss(G, D)
    inputs = _inputs()
    head_grads = {}
    for batch_idx in (1, 2):
        _all_trainable(D, loss.extras)
        loss.begin_minibatch(batch_idx)
        loss.accumulate_gradients('Dmain', gain=1, **inputs)
        head_grads[batch_idx] = {n for n in _nonzero(_grads(loss.extras)) if n.startswith('patch.')}
    assert head_grads[1] == set()
    assert head_grads[2] == {'patch.b8_conv1.weight', 'patch.b8_conv1.bias'}
    # The G step on a MixDL minibatch reads patch logits but only G trains.
    G.requires_grad_(True)
    D.requires_grad_(False)
    loss.extras.requires_grad_(False)
    loss.accumulate_gradients('Gmain', gain=1, **inputs)
    assert _nonzero(_grads(G))


def test_all_terms_off_matches_baseline_gradients_exactly():
    inputs = _inputs()
    results = []
    for cls, kwargs in ((StyleGAN2Loss, {}), (MixDLLoss, dict(lambda_G=0, lambda_D=0, patch_discrimination=False))):
        G, D = _networks(seed=5)
        loss = _make_loss(G, D, cls=cls, **kwargs)
        grads = {}
        torch.manual_seed(9)
        for batch_idx in (0, 1):
            loss.begin_minibatch(batch_idx)
            # R1 once is enough to show the regulariser path is shared; it is the slow part on CPU.
            for phase, trainable in (('Gmain', G), ('Dmain', D)) + ((('Dreg', D),) if batch_idx == 0 else ()):
                _all_trainable(trainable)
                loss.accumulate_gradients(phase, gain=1, **inputs)
                grads[(batch_idx, phase)] = {n: g.clone() for n, g in _grads(trainable).items() if g is not None}
                trainable.requires_grad_(False)
        results.append(grads)
    baseline, mixdl = results
    assert baseline.keys() == mixdl.keys()
    for key in baseline:
        assert baseline[key].keys() == mixdl[key].keys()
        for name in baseline[key]:
            assert torch.equal(baseline[key][name], mixdl[key][name]), (key, name)


@pytest.mark.parametrize('patch,keep', [(True, False), (False, False), (True, True)])
def test_mixdl_phases_report_their_terms(patch, keep):
    from torch_utils import training_stats
    G, D = _networks()
    loss = _make_loss(G, D, patch_discrimination=patch, lambda_G=1000, lambda_D=1, keep_full_adv=keep)
    collector = training_stats.Collector(regex='Loss/.*')
    inputs = _inputs()
    loss.begin_minibatch(0)
    for phase, trainable in (('Gboth', [G]), ('Dboth', [D, loss.extras])):
        _all_trainable(*trainable)
        loss.accumulate_gradients(phase, gain=1, **inputs)
        for module in trainable:
            module.requires_grad_(False)
    collector.update()
    # The stats registry is process-wide, so only names reported since this collector's last update count.
    names = {name for name in collector.names() if collector.num(name) > 0}
    assert {'Loss/mixdl/G_dist', 'Loss/mixdl/D_dist', 'Loss/r1_penalty', 'Loss/pl_penalty'} <= names
    patch_names = {'Loss/mixdl/G_patch', 'Loss/mixdl/D_patch_real', 'Loss/mixdl/D_patch_fake'}
    assert (patch_names <= names) == patch
    assert ('Loss/G/loss' in names) == (not patch or keep)  # the ordinary term: without patches or when kept
    assert 'Loss/signs/real' in names  # ADA keeps its statistic either way
    # Only MixDL's own names: a NaN another test reported under a shared name stays in that name's running sum.
    for name in {n for n in names if n.startswith('Loss/mixdl/')}:
        assert torch.isfinite(torch.tensor(collector.mean(name)))
    assert loss.first_nonfinite_phase() is None


def test_state_dict_round_trip_restores_the_random_stream():
    G, D = _networks()
    loss = _make_loss(G, D)
    state = copy.deepcopy(loss.state_dict())
    assert set(state) == {'pl_mean', 'mixdl_rng', 'mixdl_patch_head'}
    first = loss.draw_coefficients(BATCH), loss.draw_patch_layer()
    other = _make_loss(G, D, seed=999)
    other.load_state_dict(state)
    second = other.draw_coefficients(BATCH), other.draw_patch_layer()
    assert torch.equal(first[0], second[0]) and first[1] == second[1]
    with pytest.raises(ValueError, match='unexpected keys'):
        other.load_state_dict({'bogus': 1, 'mixdl_patch_head': 'lrelu'})


def test_interpolation_strip_is_written(tmp_path):
    G, D = _networks()
    loss = _make_loss(G, D)
    paths = loss.write_snapshot_images(G, str(tmp_path), '000012')
    assert [p.rsplit('/', 1)[-1] for p in paths] == ['fakes-interp-000012.png']
    import PIL.Image
    with PIL.Image.open(paths[0]) as image:
        assert image.size == (8 * RES, 4 * RES) and image.mode == 'RGB'


def test_construction_leaves_the_global_random_stream_alone():
    G, D = _networks()
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    _make_loss(G, D, seed=None)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def _phase_grads(loss, phase, module, stream_state, inputs):
    """Gradients of `module` after one MixDL-minibatch phase, from a fixed private stream and global seed."""
    loss.stream.set_state(stream_state)
    _all_trainable(module)
    torch.manual_seed(5)
    loss.begin_minibatch(0)
    loss.accumulate_gradients(phase, gain=1, **inputs)
    module.requires_grad_(False)
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize('phase,lambda_name,term', [('Gmain', 'lambda_G', 'G_dist'), ('Dmain', 'lambda_D', 'D_dist')])
def test_raising_a_lambda_by_one_adds_exactly_its_term_gradient(phase, lambda_name, term):
    G, D = _networks()
    loss = _make_loss(G, D)
    module = G if phase == 'Gmain' else D
    inputs = _inputs()
    state = loss.stream.get_state()
    grads = {}
    for weight in (1.0, 2.0):
        setattr(loss, lambda_name, weight)
        grads[weight] = _phase_grads(loss, phase, module, state, inputs)
    # The term alone, unweighted, from the same draws (coefficients come first in both).
    loss.stream.set_state(state)
    _all_trainable(module)
    torch.manual_seed(5)
    coefs = loss.draw_coefficients(BATCH)
    if phase == 'Gmain':
        terms = loss.generator_terms(inputs['gen_z'], inputs['gen_c'], coefs, distance=True, patch=False)
    else:
        terms = loss.discriminator_terms(coefs=coefs, distance=True, patch=False, **inputs)
    terms[term].backward()
    term_grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in module.parameters()]
    assert any(g.abs().sum() > 0 for g in term_grads)
    for g1, g2, t in zip(grads[1.0], grads[2.0], term_grads):
        torch.testing.assert_close(g2 - g1, t, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize('phase', ['Gmain', 'Dmain'])
def test_keep_full_adv_adds_exactly_the_full_image_adversarial_gradient(phase):
    G, D = _networks()
    module = G if phase == 'Gmain' else D
    inputs = _inputs()
    loss = _make_loss(G, D, keep_full_adv=True)
    state = loss.stream.get_state()
    both = _phase_grads(loss, phase, module, state, inputs)
    # Reference: the ordinary term, then the patch-only MixDL term continuing the same global stream
    # (synthesis noise is drawn from it), accumulated into the same gradients.
    baseline = _make_loss(G, D, cls=StyleGAN2Loss)
    loss.keep_full_adv = False
    loss.stream.set_state(state)
    _all_trainable(module)
    torch.manual_seed(5)
    baseline.begin_minibatch(0)
    baseline.accumulate_gradients(phase, gain=1, **inputs)
    full = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]
    loss.begin_minibatch(0)
    loss.accumulate_gradients(phase, gain=1, **inputs)
    module.requires_grad_(False)
    reference = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]
    assert any(g.abs().sum() > 0 for g in full)
    assert any((r - g).abs().sum() > 0 for r, g in zip(reference, full))
    for b, r in zip(both, reference):
        torch.testing.assert_close(b, r, rtol=1e-4, atol=1e-7)


def test_configurations_naming_the_old_class_and_keywords_build_the_same_loss():
    import dnnlib
    G, D = _networks()
    old = dnnlib.util.construct_class_by_name(class_name='stylegan2_ada_mixdl.loss.MixDLLoss', device='cpu',
                                              G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, mixdl_interval=3,
                                              mixdl_seed=4, lambda_G=10)
    new = _make_loss(G, D, interval=3, seed=4, lambda_G=10, r1_gamma=10)
    assert isinstance(old, MixDLLoss) and (old.interval, old.lambda_G) == (3, 10.0)
    assert torch.equal(old.draw_coefficients(BATCH), new.draw_coefficients(BATCH))


def test_training_state_records_the_patch_head_and_a_mismatch_is_a_clear_error():
    G, D = _networks()
    linear = _make_loss(G, D, patch_head='linear')
    state = linear.state_dict()
    assert state['mixdl_patch_head'] == 'linear'
    _make_loss(G, D, patch_head='linear').load_state_dict(state)
    with pytest.raises(ValueError, match='resume with --mixdl-patch-head=linear'):
        _make_loss(G, D).load_state_dict(state)
    # States without the entry come from linear-head runs.
    legacy = {k: v for k, v in state.items() if k != 'mixdl_patch_head'}
    _make_loss(G, D, patch_head='linear').load_state_dict(legacy)
    with pytest.raises(ValueError, match='saved with --mixdl-patch-head=linear'):
        _make_loss(G, D, patch_head='lrelu').load_state_dict(legacy)


@pytest.mark.parametrize('kwargs,match', [(dict(lambda_G=-1), '--mixdl-g'), (dict(interval=2.5), 'whole number'),
                                          (dict(coef_kind='beta'), 'dirichlet, gaussian, uniform'),
                                          (dict(patch_head='relu'), 'lrelu, linear')])
def test_bad_settings_name_the_option(kwargs, match):
    G, D = _networks()
    with pytest.raises(ValueError, match=match):
        _make_loss(G, D, **kwargs)
