"""Algorithm 2 (psgan_fast.loss): which network learns in which case, and
the loss values, checked against hand computation."""

import math

import pytest
import torch
from torch import nn

from psgan_fast.loss import bce_loss, d_choice, get_loss, ps_loss


def lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


class Const(nn.Module):
    """A 'generator' whose fake is one learnable number per image."""

    def __init__(self, value):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([float(value)]))

    def forward(self, batch):
        return self.theta.expand(batch, 1)


class Scale(nn.Module):
    """A 'discriminator' whose logit is w * x + b."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        return (self.w * x + self.b).squeeze(1)


def run_group(real, fakes):
    """One group through D with the recipe's plan; returns (loss output, D, Gs)."""
    gens = [Const(v) for v in fakes]
    disc = Scale()
    x = torch.tensor([[float(real)]])
    logits = disc(torch.cat([x] + [g(1) for g in gens])).view(len(gens) + 1, 1)
    out = ps_loss(logits)
    out.backward(disc.parameters(), [p for g in gens for p in g.parameters()])
    return out, disc, gens


def has_grad(module):
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


# -- N = 2: the paper's three cases ------------------------------------------

@pytest.mark.parametrize("real, fakes, learners", [
    (1.0, [3.0, 2.0], {"D", "G2"}),        # D classifies Gen1's sample as real
    (1.0, [2.0, 3.0], {"D", "G1"}),        # D classifies Gen2's sample as real
    (3.0, [1.0, 2.0], {"G1", "G2"}),       # D classifies x as real
])
def test_n2_only_the_networks_of_the_case_receive_gradient(real, fakes, learners):
    out, disc, gens = run_group(real, fakes)
    got = {name for name, m in [("D", disc), ("G1", gens[0]), ("G2", gens[1])] if has_grad(m)}
    assert got == learners


def test_n2_values_match_hand_computation_when_d_picks_gen1():
    out, disc, gens = run_group(1.0, [3.0, 2.0])
    l0, l1, l2 = 1.0, 3.0, 2.0
    assert out.d_loss.item() == pytest.approx(lse(l0, l1, l2) - l0, rel=1e-6)
    # Gen1 was picked: no loss; Gen2: -log p_2.
    assert out.g_losses.tolist() == pytest.approx([0.0, lse(l0, l1, l2) - l2], rel=1e-6)
    assert out.g_loss.item() == pytest.approx((lse(l0, l1, l2) - l2) / 2, rel=1e-6)
    assert out.shares.tolist() == [0.0, 1.0, 0.0]
    # d(-log p_2)/d theta_2 = (p_2 - 1) * w with w = 1, halved by the average.
    p2 = math.exp(l2 - lse(l0, l1, l2))
    assert gens[1].theta.grad.item() == pytest.approx((p2 - 1) / 2, rel=1e-5)
    # D's gradient is the cross-entropy's only: dCE/dw = sum_j (p_j - [j=0]) * x_j.
    p = [math.exp(l - lse(l0, l1, l2)) for l in (l0, l1, l2)]
    expected_dw = (p[0] - 1) * l0 + p[1] * l1 + p[2] * l2
    assert disc.w.grad.item() == pytest.approx(expected_dw, rel=1e-5)


def test_n2_values_when_d_is_right_average_both_generators():
    out, disc, gens = run_group(3.0, [1.0, 2.0])
    l = (3.0, 1.0, 2.0)
    assert out.d_loss.item() == 0.0
    g1, g2 = lse(*l) - l[1], lse(*l) - l[2]
    assert out.g_losses.tolist() == pytest.approx([g1, g2], rel=1e-6)
    assert out.g_loss.item() == pytest.approx((g1 + g2) / 2, rel=1e-6)
    assert out.shares.tolist() == [1.0, 0.0, 0.0]


def test_generator_loss_reaches_only_its_own_fake():
    # In "D picks x" both generators learn; generator 1's gradient must be
    # that of its own -log p_1 only (no push from generator 2's loss).
    out, disc, gens = run_group(3.0, [1.0, 2.0])
    l = torch.tensor([3.0, 1.0, 2.0])
    p = torch.softmax(l, 0)
    assert gens[0].theta.grad.item() == pytest.approx(((p[1] - 1) / 2).item(), rel=1e-5)
    assert gens[1].theta.grad.item() == pytest.approx(((p[2] - 1) / 2).item(), rel=1e-5)


def test_backward_routes_exactly_each_loss_to_its_networks():
    # Real networks, a whole batch: D's grad must equal the grad of d_loss
    # alone, each generator's grad that of the averaged generator loss alone.
    torch.manual_seed(0)
    gens = [nn.Sequential(nn.Linear(4, 6), nn.Tanh()) for _ in range(2)]
    disc = nn.Linear(6, 1)
    z, real = torch.randn(16, 4), torch.randn(16, 6)

    def forward():
        fakes = [g(z) for g in gens]
        return ps_loss(disc(torch.cat([real] + fakes)).view(3, 16))

    out = forward()
    d_params = list(disc.parameters())
    g_params = [p for g in gens for p in g.parameters()]
    want_d = torch.autograd.grad(out.d_loss, d_params, retain_graph=True)
    want_g = torch.autograd.grad(out.g_loss, g_params, retain_graph=True)
    assert 0 < out.shares[0] < 1  # a mix of cases, so both losses are live
    out.backward(d_params, g_params)
    for p, w in zip(d_params + g_params, want_d + want_g):
        torch.testing.assert_close(p.grad, w)


# -- hand-made logits ---------------------------------------------------------

def test_masks_and_batch_normalisation_on_handmade_logits():
    # Columns: D right, D picks fake 1, D picks fake 2, D right.
    logits = torch.tensor([[5.0, 0.0, 0.0, 2.0],
                           [1.0, 3.0, 1.0, 1.0],
                           [2.0, 1.0, 4.0, 0.0]], requires_grad=True)
    out = ps_loss(logits)
    cols = logits.detach().T.tolist()
    assert d_choice(logits.detach()).tolist() == [0, 1, 2, 0]
    assert out.shares.tolist() == [0.5, 0.25, 0.25]
    # Normalised by the whole batch (4), not by the number of wrong groups.
    want_d = sum(lse(*c) - c[0] for c in cols[1:3]) / 4
    assert out.d_loss.item() == pytest.approx(want_d, rel=1e-6)
    want_g1 = sum(lse(*c) - c[1] for i, c in enumerate(cols) if i != 1) / 4
    want_g2 = sum(lse(*c) - c[2] for i, c in enumerate(cols) if i != 2) / 4
    assert out.g_losses.tolist() == pytest.approx([want_g1, want_g2], rel=1e-6)

    (gd,) = torch.autograd.grad(out.d_loss, logits, retain_graph=True)
    assert (gd[:, [0, 3]] == 0).all() and (gd[:, [1, 2]] != 0).all()
    (g1,) = torch.autograd.grad(out.g_losses[0], logits, retain_graph=True)
    assert (g1[[0, 2]] == 0).all()             # only generator 1's row is live
    assert g1[1].tolist()[1] == 0 and all(v != 0 for i, v in enumerate(g1[1].tolist()) if i != 1)
    (g2,) = torch.autograd.grad(out.g_losses[1], logits)
    assert (g2[[0, 1]] == 0).all()
    assert g2[2].tolist()[2] == 0 and all(v != 0 for i, v in enumerate(g2[2].tolist()) if i != 2)


def test_ties_count_as_d_being_wrong():
    logits = torch.zeros(3, 2)
    assert d_choice(logits).tolist() == [1, 1]
    out = ps_loss(logits)
    assert out.d_loss.item() == pytest.approx(math.log(3))
    assert out.g_losses.tolist() == pytest.approx([0.0, math.log(3)])


# -- N = 1 and N = 3 ------------------------------------------------------------

@pytest.mark.parametrize("real, fake, learners", [
    (2.0, 1.0, {"G"}),   # D right: only G learns
    (1.0, 2.0, {"D"}),   # D wrong: it picked G's fake, so only D learns
])
def test_n1_d_learns_from_mistakes_g_from_failures(real, fake, learners):
    out, disc, (gen,) = run_group(real, [fake])
    assert {name for name, m in [("D", disc), ("G", gen)] if has_grad(m)} == learners
    l0, l1 = real, fake
    if "D" in learners:
        assert out.d_loss.item() == pytest.approx(lse(l0, l1) - l0, rel=1e-6)
        assert out.g_loss.item() == 0.0
    else:
        assert out.d_loss.item() == 0.0
        assert out.g_loss.item() == pytest.approx(lse(l0, l1) - l1, rel=1e-6)


@pytest.mark.parametrize("real, fakes, learners", [
    (5.0, [1.0, 2.0, 3.0], {"G1", "G2", "G3"}),
    (1.0, [2.0, 4.0, 3.0], {"D", "G1", "G3"}),
    (1.0, [2.0, 3.0, 4.0], {"D", "G1", "G2"}),
    (1.0, [4.0, 3.0, 2.0], {"D", "G2", "G3"}),
])
def test_n3_generalisation(real, fakes, learners):
    out, disc, gens = run_group(real, fakes)
    named = [("D", disc)] + [(f"G{k + 1}", g) for k, g in enumerate(gens)]
    assert {name for name, m in named if has_grad(m)} == learners
    l = [real] + fakes
    picked = max(range(4), key=lambda j: l[j])
    want = [0.0 if k + 1 == picked else lse(*l) - l[k + 1] for k in range(3)]
    assert out.g_losses.tolist() == pytest.approx(want, rel=1e-6)
    assert out.g_loss.item() == pytest.approx(sum(want) / 3, rel=1e-6)
    assert out.shares[picked].item() == 1.0


# -- BCE ablation -------------------------------------------------------------

def test_bce_values_and_every_network_learns():
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.0], [-0.5, 3.0]])
    out = bce_loss(logits)
    sp = torch.nn.functional.softplus
    want_d = sp(-logits[0]).mean() + (sp(logits[1]).mean() + sp(logits[2]).mean()) / 2
    assert out.d_loss.item() == pytest.approx(want_d.item(), rel=1e-6)
    assert out.g_losses.tolist() == pytest.approx([sp(-logits[1]).mean().item(),
                                                   sp(-logits[2]).mean().item()], rel=1e-6)
    assert out.shares.tolist() == [0.5, 0.0, 0.5]

    gens = [Const(1.0), Const(2.0)]
    disc = Scale()
    lg = disc(torch.cat([torch.tensor([[3.0]]), gens[0](1), gens[1](1)])).view(3, 1)
    out = bce_loss(lg)
    out.backward(disc.parameters(), [p for g in gens for p in g.parameters()])
    assert has_grad(disc) and has_grad(gens[0]) and has_grad(gens[1])
    # Generator k's gradient is that of its own non-saturating loss only.
    for g, v in zip(gens, (1.0, 2.0)):
        want = -torch.sigmoid(torch.tensor(-v)).item() / 2
        assert g.theta.grad.item() == pytest.approx(want, rel=1e-5)


def test_bf16_logits_are_computed_in_fp32_and_shapes_checked():
    out = ps_loss(torch.randn(3, 8).bfloat16())
    assert out.d_loss.dtype == torch.float32 and out.g_losses.shape == (2,)
    assert out.shares.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ps_loss(torch.randn(1, 8))
    assert get_loss("ps") is ps_loss and get_loss("bce") is bce_loss
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("hinge")
