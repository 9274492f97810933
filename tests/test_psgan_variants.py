"""PS-GAN's update-rule variants (psgan_fast.loss.LOSSES): which network
learns in which case, the R1/R2 penalty against an independent
computation, the alternating update against a hand-written one, and the
literal `ps` rule unchanged by the variants' code."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from psgan_fast import config
from psgan_fast.config import TrainConfig
from psgan_fast.loss import LOSSES, get_spec, gradient_penalty, group_loss, ps_loss
from psgan_fast.models.psgan import PSGANRecipe
from psgan_fast.stages import Discriminator, stage_resolutions

CPU = torch.device("cpu")
EXTRA = {"width": 16, "latent_dim": 8}


def make(n=2, stage_epochs=(0, 0, 1), **kw):
    cfg = TrainConfig(generators=n, stage_epochs=stage_epochs, epochs=sum(stage_epochs), seed=3,
                      extra=kw.pop("extra", dict(EXTRA)), **kw)
    r = PSGANRecipe(cfg, image_size=28, channels=1, steps_per_epoch=4, device=CPU)
    r.begin_epoch(0)
    return r


def real_batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 28, 28, generator=g) * 2 - 1


def test_choice_lists_agree():
    assert tuple(LOSSES) == config.LOSSES
    assert config.TrainConfig().loss == config.RECOMMENDED_LOSS in LOSSES
    spec = get_spec(config.RECOMMENDED_LOSS)  # what --model psgan trains unless told otherwise
    assert (spec.d_gate, spec.g_gate, spec.skips) == (1.0, False, True) and spec.r1 > 0 and spec.r2 > 0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_group_loss_with_paper_gates_is_ps_loss(n):
    torch.manual_seed(n)
    logits = torch.randn(n + 1, 64, requires_grad=True)
    a, b = ps_loss(logits), group_loss(logits, d_gate=0.0, g_gate=True)
    assert torch.equal(a.d_loss, b.d_loss) and torch.equal(a.g_losses, b.g_losses)
    for x, y in ((a.d_loss, b.d_loss), (a.g_loss, b.g_loss)):
        assert torch.equal(*(torch.autograd.grad(v, logits, retain_graph=True)[0] for v in (x, y)))


def test_rps_at_one_generator_is_the_relativistic_pairing_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 32)
    out = get_spec("rps").loss_fn()(logits)
    real, fake = logits
    assert out.d_loss.item() == pytest.approx(F.softplus(fake - real).mean().item(), rel=1e-6)
    assert out.g_loss.item() == pytest.approx(F.softplus(real - fake).mean().item(), rel=1e-6)


def _grads(out, logits):
    gd = torch.autograd.grad(out.d_loss, logits, retain_graph=True)[0]
    gg = [torch.autograd.grad(out.g_losses[k], logits, retain_graph=True)[0] for k in range(len(out.g_losses))]
    return gd, gg


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_soft_d_gate_weights_the_groups_d_got_right(lam):
    # Group 0: D right (real largest). Group 1: D picked generator 1's fake.
    logits = torch.tensor([[3.0, 0.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    out = group_loss(logits, d_gate=lam, g_gate=True)
    gd, gg = _grads(out, logits)
    ce = lambda col: torch.logsumexp(logits[:, col], 0) - logits[0, col]  # noqa: E731
    assert out.d_loss.item() == pytest.approx(((lam * ce(0) + ce(1)) / 2).item(), rel=1e-6)
    assert (gd[:, 0].abs().sum() > 0) == (lam > 0)   # right group: D learns only with lambda > 0
    assert gd[:, 1].abs().sum() > 0                   # wrong group: always
    # Generators keep the paper's gate: generator 1 learns nothing from group 1 (D picked it),
    # and each generator's loss reaches only its own row.
    assert gg[0][:, 1].abs().sum() == 0 and gg[0][1, 0] != 0
    assert gg[1][2].abs().sum() > 0 and gg[0][2].abs().sum() == 0 and gg[1][1].abs().sum() == 0


def test_rps_every_network_learns_from_every_group():
    logits = torch.tensor([[3.0, 0.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    out = get_spec("rps").loss_fn()(logits)
    gd, gg = _grads(out, logits)
    assert (gd.abs().sum(0) > 0).all()
    for k, g in enumerate(gg, start=1):
        assert (g[k] != 0).all() and g[[j for j in range(3) if j != k]].abs().sum() == 0


def test_gradient_penalty_value_and_parameter_gradient():
    torch.manual_seed(0)
    disc = Discriminator(2, stage_resolutions(28), width=16).double()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64) * 2 - 1
    # The value: per-image input gradients, one image at a time.
    want = 0.0
    for i in range(5):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(disc(xi).sum(), xi)
        want += g.pow(2).sum().item() / 5
    pen = gradient_penalty(disc, x)
    assert pen.item() == pytest.approx(want, rel=1e-9)
    # Its gradient in D's parameters (double backward) against central differences.
    w = disc.head["fc"].weight
    (gw,) = torch.autograd.grad(gradient_penalty(disc, x), w)
    eps = 1e-6
    for idx in [(0, 0), (0, 17), (0, 100)]:
        with torch.no_grad():
            w[idx] += eps
        up = gradient_penalty(disc, x).item()
        with torch.no_grad():
            w[idx] -= 2 * eps
        down = gradient_penalty(disc, x).item()
        with torch.no_grad():
            w[idx] += eps
        assert gw[idx].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-10)



@pytest.mark.parametrize("arch", ["paper", "deep"])
@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_written_out_input_gradient_matches_autograd(arch, skips, channels_last):
    # Discriminator.input_gradient (R1/R2's fast path) against autograd's
    # create_graph gradient: the same per-image input gradients and the same
    # weight gradients of the squared norm (the double backward), at every stage.
    for stage in range(3):
        torch.manual_seed(stage)
        disc = Discriminator(stage, stage_resolutions(28), width=16, arch=arch, skips=skips).double()
        for prm in disc.parameters():  # away from the zero-initialised top block of a skip D
            torch.nn.init.normal_(prm, std=0.3)
        r = stage_resolutions(28)[stage]
        x = torch.rand(4, 1, r, r, dtype=torch.float64) * 2 - 1
        if channels_last:
            disc, x = disc.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        xi = x.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(disc(xi).sum(), xi, create_graph=True)
        got = disc.input_gradient(x)
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
        weights = [prm for name, prm in disc.named_parameters() if name.endswith("weight")]
        gw_want = torch.autograd.grad(want.pow(2).sum(), weights)
        gw_got = torch.autograd.grad(got.pow(2).sum(), weights)
        for a, b in zip(gw_got, gw_want):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


def test_penalty_by_the_written_out_chain_equals_autograds():
    # The recipe's default penalty_grad "chain" and the "autograd" reference
    # leave the same gradient in D (the recommended default: skip networks).
    grads = {}
    for how in ("chain", "autograd"):
        torch.manual_seed(5)
        r = make(n=2, extra={**EXTRA, "penalty_grad": how})
        disc = r.modules()["D"]
        for prm in disc.parameters():
            torch.nn.init.normal_(prm, std=0.1)
        real = real_batch(seed=3)
        fakes = [torch.rand(real.shape, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (7, 8)]
        extras = {}
        r._penalty(real, fakes, extras)
        grads[how] = (torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten()
                                 for p in disc.parameters()]), extras)
    (a, ea), (b, eb) = grads["chain"], grads["autograd"]
    assert a.abs().sum() > 0 and torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert torch.allclose(ea["r1"], eb["r1"]) and torch.allclose(ea["r2"], eb["r2"])
    with pytest.raises(ValueError, match="penalty_grad"):
        make(n=1, extra={**EXTRA, "penalty_grad": "finite-differences"})

@pytest.mark.parametrize("knobs", [{}, {"reg_batch": 5}, {"r1": 0.0}, {"r2": 0.0}, {"d_skips": True},
                                   {"generators": 3, "reg_batch": 4}])
def test_penalty_reuses_the_steps_forward_with_the_same_result(knobs):
    # The chain's pre-activations taken from the step's own forward of D (rows
    # of the penalised images) instead of a second forward: one forward of D
    # per penalised step, and the same weights after it.
    knobs = dict(knobs)
    n = knobs.pop("generators", 2)
    after, forwards = {}, {}
    for reuse in (True, False):
        torch.manual_seed(11)
        r = make(n=n, stage_epochs=(0, 1, 0), **knobs)
        assert r._reuse_pre
        r._reuse_pre = reuse
        disc = r.modules()["D"]
        calls, forward = [], disc.forward
        disc.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # input_gradient calls it too
        r.step(real_batch(seed=4))
        forwards[reuse] = len(calls)
        after[reuse] = torch.cat([p.detach().flatten() for p in disc.parameters()])
    assert forwards == {True: 1, False: 2}
    assert torch.allclose(after[True], after[False], rtol=1e-5, atol=1e-7)


# (d_loss, g_losses) of 3 epochs x 3 steps (7, 14, 28 px) and the sum of all
# parameters after them, for N = 1 and 2, recorded at commit 8ad6b94 (before
# the variants existed) by the loop in test_literal_ps_recipe_is_unchanged.
LITERAL_PS = {
    1: ([(0.131153, [0.570927]), (0.262293, [0.437811]), (0.218206, [0.483907]),
         (0.566047, [0.130615]), (0.347392, [0.347585]), (0.348087, [0.348837]),
         (0.564156, [0.130059]), (0.43389, [0.260365]), (0.477326, [0.217044])], 44.38397),
    2: ([(1.110675, [0.136916, 0.971329]), (1.037187, [0.479744, 0.693533]), (0.897419, [0.343809, 0.97085]),
         (0.688575, [1.102441, 0.413197]), (0.826267, [0.964346, 0.412125]), (0.75672, [1.104156, 0.343733]),
         (0.82509, [0.825079, 0.549436]), (0.618324, [0.893919, 0.686757]), (0.481553, [1.099596, 0.618636])],
        98.93716),
}


def test_literal_ps_recipe_is_unchanged():
    """`--loss ps` gives, step for step, the numbers of the code before the
    variants existed (same seed, same data, same schedule)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        for n in (1, 2):
            cfg = TrainConfig(generators=n, stage_epochs=(1, 1, 1), epochs=3, loss="ps",
                              extra={"width": 16, "latent_dim": 8})
            r = PSGANRecipe(cfg, image_size=28, channels=1, steps_per_epoch=4, device=CPU)
            g = torch.Generator().manual_seed(1)
            got = []
            for ep in range(3):
                r.begin_epoch(ep)
                for _ in range(3):
                    o = r.step(torch.rand(16, 1, 28, 28, generator=g) * 2 - 1)
                    got.append((o.d_loss.item(), o.g_loss.tolist()))
            steps, param_sum = LITERAL_PS[n]
            for (d, gl), (wd, wg) in zip(got, steps):
                assert d == pytest.approx(wd, rel=1e-4, abs=1e-5) and gl == pytest.approx(wg, rel=1e-4, abs=1e-5)
            total = sum(p.double().sum().item() for m in r.modules().values() for p in m.parameters())
            assert total == pytest.approx(param_sum, rel=1e-5)
    finally:
        torch.set_num_threads(threads)


def test_spec_knobs_set_explicitly_reproduce_the_literal_rule():
    torch.manual_seed(5)
    a = make(loss="ps")
    torch.manual_seed(5)
    b = make(loss="ps-soft", d_gate=0.0, g_gate=True)
    for i in range(3):
        for r in (a, b):
            torch.manual_seed(100 + i)  # the same z for both
            r.step(real_batch(seed=i))
    for name, m in a.modules().items():
        for (k, p), q in zip(m.state_dict().items(), b.modules()[name].state_dict().values()):
            assert torch.allclose(p.float(), q.float(), atol=1e-6), (name, k)


def test_alternating_update_matches_a_hand_written_one():
    torch.manual_seed(2)
    r = make(n=2, loss="rps", update="alternating")
    gens = [copy.deepcopy(r.modules()[f"G{k}"]) for k in range(2)]
    disc = copy.deepcopy(r.modules()["D"])
    opts = {k: copy.deepcopy(o) for k, o in r.optimizers().items()}
    # Rebind the copied optimisers to the copied parameters.
    for name, net in [("G0", gens[0]), ("G1", gens[1]), ("D", disc)]:
        opts[name] = torch.optim.Adam(net.parameters(), lr=r.lr, betas=r.betas)
    real = real_batch(b=8, seed=1).contiguous(memory_format=torch.channels_last)
    state = torch.random.get_rng_state()
    r.step(real)
    torch.random.set_rng_state(state)
    z = torch.randn(8, 8)
    loss = get_spec("rps").loss_fn()
    fakes = [g(z) for g in gens]
    out = loss(disc(torch.cat([real, *[f.detach() for f in fakes]])).view(3, 8))
    out.d_loss.backward()
    opts["D"].step()
    for p in disc.parameters():
        p.requires_grad_(False)
    loss(disc(torch.cat([real, *fakes])).view(3, 8)).g_loss.backward()
    opts["G0"].step()
    opts["G1"].step()
    for name, net in [("G0", gens[0]), ("G1", gens[1]), ("D", disc)]:
        for p, q in zip(net.parameters(), r.modules()[name].parameters()):
            assert torch.allclose(p, q, atol=1e-5), name


def test_lazy_penalty_reaches_d_every_k_steps_with_weight_k():
    gamma, k = 0.5, 3
    grads = {}
    for r1 in (0.0, gamma):
        torch.manual_seed(4)
        r = make(n=1, loss="rps", r1=r1, reg_every=k, update="alternating", lr=1e-30)
        real = real_batch(seed=2)
        disc = r.modules()["D"]
        seen = []
        for i in range(k + 1):
            out = r.step(real)
            seen.append((torch.cat([p.grad.flatten() for p in disc.parameters()]).clone(),
                         "r1" in out.extras))
        grads[r1] = seen
    # Step 0 and step k penalise, the steps between do not.
    assert [s[1] for s in grads[gamma]] == [True] + [False] * (k - 1) + [True]
    assert [s[1] for s in grads[0.0]] == [False] * (k + 1)
    torch.manual_seed(4)
    disc = make(n=1, loss="rps", r1=gamma, reg_every=k, update="alternating").modules()["D"]  # same initial D
    params = list(disc.parameters())
    pen = 0.5 * gamma * k * gradient_penalty(disc, real_batch(seed=2).contiguous(memory_format=torch.channels_last))
    want = [torch.zeros_like(p) if g is None else g
            for g, p in zip(torch.autograd.grad(pen, params, allow_unused=True), params)]
    diff = grads[gamma][0][0] - grads[0.0][0][0]
    assert torch.allclose(diff, torch.cat([g.flatten() for g in want]), rtol=1e-3, atol=1e-6)
    assert torch.equal(grads[gamma][1][0], grads[0.0][1][0])


def test_deep_discriminator_transfers_its_shared_levels():
    res = stage_resolutions(28)
    d1, d2 = Discriminator(1, res, width=16, arch="deep"), Discriminator(2, res, width=16, arch="deep")
    assert set(d1.mid) == {"14"} and set(d2.mid) == {"28", "14"}
    shared = set(d1.state_dict()) & set(d2.state_dict())
    assert {"mid.14.weight", "down.14.weight", "head.fc.weight"} <= shared
    assert Discriminator(2, res, width=16)(torch.zeros(2, 1, 28, 28)).shape == (2,)
    paper_keys = set(Discriminator(2, res, width=16).state_dict())
    assert not any(k.startswith("mid.") for k in paper_keys)
    with pytest.raises(ValueError, match="architecture"):
        Discriminator(0, res, arch="wide")


def test_penalty_step_counter_survives_resume():
    r = make(n=1, loss="rps", r1=0.1, reg_every=2)
    r.step(real_batch())
    state = r.state()
    assert state["steps"] == 1
    r2 = make(n=1, loss="rps", r1=0.1, reg_every=2)
    r2.load_state(state)
    assert "r1" not in r2.step(real_batch()).extras  # step 1: not a penalty step
    assert "r1" in r2.step(real_batch()).extras      # step 2: one


@pytest.mark.parametrize("loss, every", [(config.RECOMMENDED_LOSS, 8), ("rps-r1r2-gskips-s118", 4)])
def test_the_default_penalises_every_8th_step_and_the_previous_every_4th(loss, every):
    """The recommended rule runs R1/R2 on steps 0, 8, 16, ... (half the
    penalty's cost of the previous default, docs/results/cost.md); the
    previous default keeps every 4th step, so its runs resume as they were."""
    r = make(n=1, loss=loss)
    assert [("r1" in r.step(real_batch()).extras) for _ in range(17)] == [i % every == 0 for i in range(17)]


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="reg_every"):
        make(loss="rps", r1=-1.0)
    with pytest.raises(ValueError, match="update"):
        make(loss="rps", update="sideways")
    with pytest.raises(ValueError, match="gates"):
        make(loss="bce", d_gate=0.5)


@pytest.mark.parametrize("arch,skips", [("paper", False), ("deep", False), ("paper", True)])
@pytest.mark.parametrize("loss", ["ps", "rps"])
def test_routed_single_backward_equals_two_passes(arch, skips, loss):
    """D's routed backward (one pass, loss.GradRoute) gives D's parameters
    exactly d_loss's gradient and the fakes exactly g_loss's, for every
    discriminator the variants build."""
    from psgan_fast.loss import GradRoute, routed_backward

    torch.manual_seed(0)
    disc = Discriminator(2, stage_resolutions(28), width=16, arch=arch, skips=skips)
    if skips:  # give the zero-initialised top block weights, so every path carries gradient
        torch.nn.init.normal_(disc.down["28"].weight, std=0.1)
    fn = get_spec(loss).loss_fn()
    real = real_batch(b=6)
    fakes = torch.randn(12, 1, 28, 28, requires_grad=True)
    out = fn(disc(torch.cat([real, fakes])).view(3, 6))
    d_params = list(disc.parameters())
    want_d = torch.autograd.grad(out.d_loss, d_params, retain_graph=True)
    (want_f,) = torch.autograd.grad(out.g_loss, fakes)
    route = GradRoute(input_rows=slice(6, None))
    logits = disc(torch.cat([real, fakes]), route=route).view(3, 6)
    routed_backward(logits, fn, route)
    for p, w in zip(d_params, want_d):
        assert torch.allclose(p.grad, w, rtol=1e-4, atol=1e-7)
    assert torch.allclose(fakes.grad, want_f, rtol=1e-4, atol=1e-8)


def test_skip_networks_continue_the_previous_stage_after_a_switch():
    """With skips, the stage-k networks built by a switch (Algorithm 1 at
    alpha = 0, i.e. the shared layers copied) draw and score exactly as the
    stage-(k-1) ones did, upsampled / downsampled."""
    from psgan_fast.stages import Generator
    from psgan_fast.transfer import mix_weights

    res = stage_resolutions(28)
    torch.manual_seed(1)
    for k in (1, 2):
        g_old, g_new = Generator(k - 1, res, width=16, skips=True), Generator(k, res, width=16, skips=True)
        d_old, d_new = Discriminator(k - 1, res, width=16, skips=True), Discriminator(k, res, width=16, skips=True)
        mix_weights(g_old, g_new, 0.0)
        mix_weights(d_old, d_new, 0.0)
        g_old.eval(), g_new.eval()
        z = torch.randn(4, 128)
        before = torch.atanh(g_old(z).double().clamp(-1 + 1e-7, 1 - 1e-7))
        want = torch.tanh(F.interpolate(before, scale_factor=2, mode="nearest"))
        assert torch.allclose(g_new(z).double(), want, atol=1e-5)
        x = torch.rand(4, 1, res[k], res[k])
        assert torch.allclose(d_new(x), d_old(F.avg_pool2d(x, 2)), atol=1e-6)
        # Without skips the new stage starts from a fresh output layer: not continuous.
        p_old, p_new = Generator(k - 1, res, width=16), Generator(k, res, width=16)
        mix_weights(p_old, p_new, 0.0)
        p_old.eval(), p_new.eval()
        up = F.interpolate(p_old(z), scale_factor=2, mode="nearest")
        assert (p_new(z) - up).abs().max() > 1e-2


def test_r1_and_r2_in_one_pass_match_separate_penalties():
    # The recipe runs R1 (real) and R2 (fakes) as one double-backward pass
    # over the concatenated batch; D scores each image alone, so D's
    # gradient must equal that of the two penalties computed separately.
    g1, g2, k = 0.7, 0.3, 2
    for r1, r2 in ((g1, g2), (g1, 0.0), (0.0, g2)):
        torch.manual_seed(5)
        r = make(n=2, loss="rps", r1=r1, r2=r2, reg_every=k)
        disc = r.modules()["D"]
        real = real_batch(seed=3)
        fakes = [torch.rand(real.shape, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (7, 8)]
        extras = {}
        r._penalty(real, fakes, extras)
        got = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in disc.parameters()])
        assert set(extras) == {name for name, g in (("r1", r1), ("r2", r2)) if g}
        params = list(disc.parameters())
        pen = 0.5 * k * (r1 * gradient_penalty(disc, real) + r2 * gradient_penalty(disc, torch.cat(fakes)))
        want = torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                          for g, p in zip(torch.autograd.grad(pen, params, allow_unused=True), params)])
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)
        if r1:
            assert torch.allclose(extras["r1"], gradient_penalty(disc, real))
        if r2:
            assert torch.allclose(extras["r2"], gradient_penalty(disc, torch.cat(fakes)))


def test_reg_batch_penalises_the_first_k_reals_and_an_even_share_of_each_generators_fakes():
    # reg_batch K: R1 on real[:K], R2 on the first ceil(K / N) fakes of each generator.
    k, n = 3, 2
    torch.manual_seed(6)
    r = make(n=n, loss="rps", r1=0.4, r2=0.6, reg_every=2, reg_batch=k)
    disc = r.modules()["D"]
    real = real_batch(seed=4)
    fakes = [torch.rand(real.shape, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (9, 10)]
    extras = {}
    r._penalty(real, fakes, extras)
    per = -(-k // n)
    assert torch.allclose(extras["r1"], gradient_penalty(disc, real[:k]))
    assert torch.allclose(extras["r2"], gradient_penalty(disc, torch.cat([f[:per] for f in fakes])))
    assert not torch.allclose(extras["r1"], gradient_penalty(disc, real))  # the rest of the batch is left out


def test_d_skips_turns_off_the_discriminators_half_of_the_skip_networks():
    r = make(n=1, loss="rps-r1r2-skips", d_skips=False)
    assert r.modules()["G0"].skips and not r.modules()["D"].skips
    assert set(r.modules()["D"].from_image) == {"28"}
    both = make(n=1, loss="rps-r1r2-skips")
    assert both.modules()["D"].skips and set(both.modules()["D"].from_image) == {"28", "14", "7"}


def test_resolved_spec_takes_the_configs_knobs_and_settles_d_skips():
    spec = get_spec("rps-r1r2-skips")
    same = spec.resolved(config.TrainConfig())
    assert same == dataclasses.replace(spec, d_skips=True)  # nothing set: the spec's, D's skips as G's
    cfg = config.TrainConfig(r1=0.5, reg_every=8, reg_batch=32, skips=False, d_gate=0.5)
    got = spec.resolved(cfg)
    assert (got.r1, got.r2, got.reg_every, got.reg_batch, got.skips, got.d_skips) == (0.5, 0.1, 8, 32, False, False)
    assert got.d_gate == spec.d_gate  # the gates are bound by loss_fn, not here
    assert spec.resolved(config.TrainConfig(d_skips=False)).skips and not spec.resolved(
        config.TrainConfig(d_skips=False)).d_skips


def test_a_specs_adam_betas_apply_unless_the_config_sets_its_own(monkeypatch):
    # LossSpec.betas: the spec's Adam betas for every network; --betas wins;
    # a spec without betas keeps the model's (models.RECIPES).
    from psgan_fast import registry
    from psgan_fast.models import defaults_of

    spec = dataclasses.replace(LOSSES["rps"], betas=(0.0, 0.99))
    monkeypatch.setitem(registry.LOSSES, "rps", spec)
    r = make(n=2, loss="rps")
    assert all(o.param_groups[0]["betas"] == (0.0, 0.99) for o in r.optimizers().values())
    assert "betas=(0.0, 0.99)" in r._describe()
    r = make(n=2, loss="rps", betas=(0.3, 0.9))
    assert all(o.param_groups[0]["betas"] == (0.3, 0.9) for o in r.optimizers().values())
    r = make(n=2, loss="ps")
    assert all(o.param_groups[0]["betas"] == defaults_of("psgan").betas for o in r.optimizers().values())


def test_mode_seeking_term_rewards_spread_and_has_msgans_form():
    from psgan_fast.loss import MODE_SEEK_EPS, mode_seeking_loss

    torch.manual_seed(0)
    z = torch.randn(8, 4)
    same = torch.zeros(8, 1, 4, 4)  # one image for every z: the term's worst case
    spread = torch.randn(8, 1, 4, 4)
    assert mode_seeking_loss(same, z).item() == pytest.approx(1 / MODE_SEEK_EPS)
    want = 1 / ((spread[:4] - spread[4:]).abs().mean() / (z[:4] - z[4:]).abs().mean() + MODE_SEEK_EPS)
    assert mode_seeking_loss(spread, z).item() == pytest.approx(want.item())
    assert mode_seeking_loss(spread * 2, z) < mode_seeking_loss(spread, z)
    # a gradient step on the images moves each pair apart
    x = spread.clone().requires_grad_(True)
    mode_seeking_loss(x, z).backward()
    stepped = (x - 0.1 * x.grad.sign()).detach()
    assert ((stepped[:4] - stepped[4:]).abs().mean() > (spread[:4] - spread[4:]).abs().mean())
    # an odd last row is left out; a batch of one has no pair
    assert mode_seeking_loss(torch.cat([spread, spread[:1]]), torch.cat([z, z[:1]])) == mode_seeking_loss(spread, z)
    with pytest.raises(ValueError, match="2 or more"):
        mode_seeking_loss(spread[:1], z[:1])


def test_the_ink_normalised_distance_scores_thin_and_thick_strokes_alike():
    """--mode-seek-dist l1-ink: MSGAN's L1 distance grows with the pair's ink
    (two disjoint thin strokes are nearer than two disjoint thick ones, so
    the term prefers thick digits); divided by the ink, both pairs are at
    distance 1 and pay the same, and equal images still pay 1 / eps."""
    from psgan_fast.loss import MODE_SEEK_EPS, mode_seeking_loss

    def strokes(width):  # image 0: a vertical stroke on the left; image 1: one on the right
        x = -torch.ones(2, 1, 8, 8)
        x[0, 0, :, 1:1 + width] = 1.0
        x[1, 0, :, 7 - width:7] = 1.0
        return x

    z = torch.tensor([[0.0], [1.0]])  # |z1 - z2| = 1
    thin, thick = strokes(1), strokes(3)
    assert mode_seeking_loss(thin, z, "l1") > 2 * mode_seeking_loss(thick, z, "l1")
    assert mode_seeking_loss(thin, z, "l1-ink").item() == pytest.approx(1.0, rel=1e-4)
    assert mode_seeking_loss(thick, z, "l1-ink").item() == pytest.approx(1.0, rel=1e-4)
    assert mode_seeking_loss(torch.cat([thin[:1], thin[:1]]), z, "l1-ink").item() == pytest.approx(1 / MODE_SEEK_EPS)
    # half-overlapping thick strokes: d = |differing ink| / |total ink| = 2 / 6 (columns)
    half = strokes(3)
    half[1] = -1.0
    half[1, 0, :, 2:5] = 1.0
    assert mode_seeking_loss(half, z, "l1-ink").item() == pytest.approx(3.0, rel=1e-4)
    # its gradient moves the strokes apart without rewarding more ink: on the shared column it removes ink
    x = half.clone().requires_grad_(True)
    mode_seeking_loss(x, z, "l1-ink").backward()
    assert (x.grad[0, 0, :, 2:4] > 0).all()  # shared columns: a descent step lowers the ink there
    with pytest.raises(ValueError, match="l1, l1-ink"):
        mode_seeking_loss(thin, z, "l2")


def test_mode_seek_dist_reaches_the_term_and_the_flag_overrides_the_spec():
    from psgan_fast.loss import mode_seeking_loss

    assert make(loss="rps-r1r2-gskips-s118-r8-ms0.3").mode_seek_dist == "l1"  # the spec's, for any N
    assert make(n=3, loss="rps", mode_seek_dist="l1-ink").mode_seek_dist == "l1-ink"
    assert make(n=3, loss="rps", mode_seek_dist="l1-ink-n1").mode_seek_dist == "l1"  # settled by N
    with pytest.raises(ValueError, match="l1, l1-ink, l1-ink-n1"):
        make(loss="rps", mode_seek_dist="l2")
    r = make(loss="rps", mode_seek=0.5, mode_seek_dist="l1-ink")
    gens = [copy.deepcopy(g) for g in r._gens]
    torch.manual_seed(5)
    real = real_batch(b=8)
    out = r.step(real)
    torch.manual_seed(5)
    real_batch(b=8)
    z = r.noise(8, r._latent, device=CPU)
    with torch.no_grad():
        fakes = [g(z) for g in gens]
    ink = torch.stack([mode_seeking_loss(f, z, "l1-ink") for f in fakes]).mean()
    l1 = torch.stack([mode_seeking_loss(f, z, "l1") for f in fakes]).mean()
    assert torch.allclose(out.extras["mode_seek"], ink) and not torch.allclose(ink, l1)


@pytest.mark.parametrize("update,backward", [("simultaneous", "routed"), ("simultaneous", "two-pass"),
                                             ("alternating", "routed")])
def test_mode_seek_reaches_the_generators_only(update, backward):
    """--mode-seek adds lambda x the generators' mean mode-seeking term to
    their loss: D's gradients are those without it, each generator's are
    those without it plus the term's, in every update form."""
    from psgan_fast.loss import mode_seeking_loss

    def step(ms):
        r = make(loss="rps", update=update, mode_seek=ms, extra=dict(EXTRA, d_backward=backward))
        opts = r._opts
        for opt in opts.values():  # record the gradients, do not apply them
            opt.step = lambda: None
        torch.manual_seed(5)
        out = r.step(real_batch(b=8))
        return r, out

    base, out0 = step(0.0)
    r, out = step(0.5)
    assert "mode_seek" not in out0.extras and out.extras["mode_seek"] > 0
    for p, q in zip(base._D.parameters(), r._D.parameters()):
        assert torch.equal(p.grad, q.grad)
    # the term's own gradient, from the same noise and the same generators
    torch.manual_seed(5)
    real_batch(b=8)
    z = r.noise(8, r._latent, device=CPU)
    gens = [copy.deepcopy(g) for g in r._gens]
    for g in gens:
        g.zero_grad(set_to_none=True)
    fakes = [g(z) for g in gens]
    (0.5 * torch.stack([mode_seeking_loss(f, z) for f in fakes]).mean()).backward()
    assert torch.allclose(out.extras["mode_seek"], torch.stack([mode_seeking_loss(f, z) for f in fakes]).mean())
    for g0, g1, gt in zip(base._gens, r._gens, gens):
        for p0, p1, pt in zip(g0.parameters(), g1.parameters(), gt.parameters()):
            assert torch.allclose(p1.grad, p0.grad + pt.grad, rtol=1e-4, atol=1e-6)


def test_the_default_is_the_r8_rule_plus_the_mode_seeking_term_at_0_3_ink_divided_for_one_generator():
    rec, ms01 = get_spec(config.RECOMMENDED_LOSS), get_spec("rps-r1r2-gskips-s118-r8-ms")
    r8, ms03 = get_spec("rps-r1r2-gskips-s118-r8"), get_spec("rps-r1r2-gskips-s118-r8-ms0.3")
    assert config.RECOMMENDED_LOSS == "rps-r1r2-gskips-s118-r8-ms0.3-ink1" and TrainConfig().loss == config.RECOMMENDED_LOSS
    assert r8.mode_seek == 0 and ms01.mode_seek == 0.1 and ms03.mode_seek == rec.mode_seek == 0.3
    for spec in (rec, ms01, ms03):  # the mode-seeking term is all that sets them apart from the r8 rule
        assert dataclasses.replace(spec, mode_seek=0.0, mode_seek_dist="l1", summary="") == dataclasses.replace(
            r8, summary="")
    assert (ms03.mode_seek_dist, rec.mode_seek_dist) == ("l1", "l1-ink-n1")
    assert make(loss=config.RECOMMENDED_LOSS).mode_seek == 0.3
    assert make(loss="rps-r1r2-gskips-s118-r8-ms").mode_seek == 0.1  # a previous default resumes as it was
    assert make(loss=config.RECOMMENDED_LOSS, mode_seek=0.0).mode_seek == 0.0  # the flag overrides the spec


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_default_trains_the_previous_one_with_two_or_more_generators(n):
    """l1-ink-n1 settles by N: l1-ink for one generator, MSGAN's l1 for more, so
    with N >= 2 the default's steps are the previous default's (ms0.3) bit
    for bit, and with N = 1 they are ms0.3's with --mode-seek-dist l1-ink."""
    twin = {"loss": "rps-r1r2-gskips-s118-r8-ms0.3", **({"mode_seek_dist": "l1-ink"} if n == 1 else {})}
    a, b = make(n=n, loss=config.RECOMMENDED_LOSS), make(n=n, **twin)
    assert a.mode_seek_dist == ("l1-ink" if n == 1 else "l1") == b.mode_seek_dist
    for step in range(2):
        torch.manual_seed(7 + step)
        oa = a.step(real_batch(b=8, seed=step))
        torch.manual_seed(7 + step)
        ob = b.step(real_batch(b=8, seed=step))
        assert torch.equal(oa.extras["mode_seek"], ob.extras["mode_seek"])
        assert torch.equal(oa.d_loss, ob.d_loss) and torch.equal(oa.g_loss, ob.g_loss)
    for (name, net_a), net_b in zip(a.modules().items(), b.modules().values()):
        assert all(torch.equal(pa, pb) for pa, pb in zip(net_a.parameters(), net_b.parameters())), name
    # ... and not the L1 model with one generator: the distance changes the step
    if n == 1:
        c = make(n=1, loss="rps-r1r2-gskips-s118-r8-ms0.3")
        torch.manual_seed(7)
        oc = c.step(real_batch(b=8, seed=0))
        torch.manual_seed(7)
        oa = make(n=1, loss=config.RECOMMENDED_LOSS).step(real_batch(b=8, seed=0))
        assert not torch.equal(oa.extras["mode_seek"], oc.extras["mode_seek"])


def test_mode_seek_zero_is_the_step_without_it_and_negative_is_refused():
    a, b = make(loss="rps"), make(loss="rps", mode_seek=0.0)
    torch.manual_seed(2)
    oa = a.step(real_batch(b=8))
    torch.manual_seed(2)
    ob = b.step(real_batch(b=8))
    assert torch.equal(oa.d_loss, ob.d_loss) and torch.equal(oa.g_loss, ob.g_loss) and "mode_seek" not in ob.extras
    for p, q in zip(a._gens[0].parameters(), b._gens[0].parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="mode_seek"):
        make(loss="rps", mode_seek=-1.0)
    with pytest.raises(config.ConfigError, match="--mode-seek"):
        config.validate(TrainConfig(mode_seek=float("nan")))
