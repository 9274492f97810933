"""psgan_fast.kernels vs the PyTorch ways of doing the same thing.

Groups (pytest-benchmark ``group``; each compares like with like):

* ``sn: SNGAN D fwd+bwd`` - the whole SNGAN discriminator (default width,
  28x28, batch 128 = real + fake) forward + backward: no spectral norm,
  torch's parametrization, ours (reference), ours (Triton, CUDA only).
* ``sn: weight fwd+bwd [512x2304]`` - spectral norm alone on a
  Conv2d(256, 512, 3) weight (the SNGAN paper's largest standard-CNN layer):
  one power iteration, W / sigma, and the backward into W.
* ``mix: PS-GAN stage 1->2`` - Algorithm 1 at the 14x14 -> 28x28 switch of
  PS-GAN with 2 generators (2 G + D, default width): the reference
  (psgan_fast.transfer), a per-tensor Python loop of in-place ops,
  torch._foreach_lerp_, ours (Triton, one launch per dtype group, CUDA only).

Triton rows are skipped without a GPU: the CPU interpreter is a correctness
tool, not something to time. Run: ``python -m pytest bench/test_bench_kernels.py
--benchmark-only`` (``make bench`` runs every benchmark); a same-run table of
ratios (best round of each) is printed at the end.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from conftest import report
from psgan_fast.kernels import mix_weights
from psgan_fast.models.sngan import Discriminator, add_spectral_norm

SN = importlib.import_module("psgan_fast.kernels.spectral_norm")
MIX = importlib.import_module("psgan_fast.kernels.mix")
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
NO_GPU = "the Triton path needs a CUDA GPU (the CPU interpreter is not for timing)"


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _run(benchmark, fn, group: str, name: str, *, baseline: bool = False, rounds: int = 30):
    benchmark.group = f"{group} ({DEVICE.type})"
    benchmark.name = name

    def timed():
        fn()
        _sync()

    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=3)
    # The best round: on a shared machine the median mostly measures the neighbours.
    report(benchmark.group, name, benchmark.stats.stats.min * 1e6, f"us (best of {rounds})",
           baseline=baseline, higher_is_better=False)


# ----------------------------------------------------------------------------------------------
# Spectral norm
# ----------------------------------------------------------------------------------------------

def _torch_sn(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            torch.nn.utils.parametrizations.spectral_norm(m)
    return module


SN_VARIANTS = {
    "no spectral norm": lambda m: m,
    "torch parametrizations.spectral_norm": _torch_sn,
    "psgan_fast ref": lambda m: add_spectral_norm(m, "ref"),
    "psgan_fast triton": lambda m: add_spectral_norm(m, "triton"),
}


@pytest.mark.parametrize("variant", list(SN_VARIANTS))
def test_sn_discriminator_fwd_bwd(benchmark, variant):
    if "triton" in variant and not CUDA:
        pytest.skip(NO_GPU)
    torch.manual_seed(0)
    d = SN_VARIANTS[variant](Discriminator(28, 1)).to(DEVICE).train()
    x = torch.randn(128, 1, 28, 28, device=DEVICE)

    def step():
        d.zero_grad(set_to_none=True)
        d(x).sum().backward()

    _run(benchmark, step, "sn: SNGAN D fwd+bwd, batch 128", variant,
         baseline=variant.startswith("torch"))


@pytest.mark.parametrize("variant", [v for v in SN_VARIANTS if v != "no spectral norm"])
def test_sn_weight_fwd_bwd(benchmark, variant):
    if "triton" in variant and not CUDA:
        pytest.skip(NO_GPU)
    torch.manual_seed(0)
    conv = SN_VARIANTS[variant](nn.Conv2d(256, 512, 3)).to(DEVICE).train()
    original = conv.parametrizations.weight.original
    g = torch.randn_like(original)

    def step():
        original.grad = None
        (conv.weight * g).sum().backward()

    _run(benchmark, step, "sn: weight fwd+bwd [512x2304]", variant,
         baseline=variant.startswith("torch"))


# ----------------------------------------------------------------------------------------------
# mix_weights
# ----------------------------------------------------------------------------------------------

def _stage_networks(stage: int, generators: int = 2) -> list[nn.Module]:
    stages = pytest.importorskip("psgan_fast.stages")
    torch.manual_seed(stage)
    nets = [stages.build_generator(stage) for _ in range(generators)]
    nets.append(stages.build_discriminator(stage))
    return [n.to(DEVICE) for n in nets]


def _mix_loop(old: nn.Module, new: nn.Module, alpha: float) -> None:
    """One or two in-place ops per tensor, in a Python loop."""
    old_sd, new_sd = old.state_dict(), new.state_dict()
    with torch.no_grad():
        for name, n in new_sd.items():
            o = old_sd.get(name)
            if o is None or o.shape != n.shape:
                continue
            if o.is_floating_point() and n.is_floating_point():
                n.mul_(alpha).add_(o, alpha=1 - alpha)
            else:
                n.copy_(o)


def _mix_foreach(old: nn.Module, new: nn.Module, alpha: float) -> None:
    """torch._foreach_lerp_ over the matched float tensors, _foreach_copy_ for the rest."""
    old_sd, new_sd = old.state_dict(), new.state_dict()
    _, mix, copy = MIX._classify(old_sd, new_sd, alpha)
    with torch.no_grad():
        if mix:
            torch._foreach_lerp_([new_sd[k] for k in mix], [old_sd[k] for k in mix], 1 - alpha)
        if copy:
            torch._foreach_copy_([new_sd[k] for k in copy], [old_sd[k] for k in copy])


MIX_VARIANTS = {
    "psgan_fast ref (transfer.mix_weights)": lambda o, n, a: mix_weights(o, n, a, impl="ref"),
    "per-tensor Python loop": _mix_loop,
    "torch._foreach_lerp_": _mix_foreach,
    "psgan_fast triton": lambda o, n, a: mix_weights(o, n, a, impl="triton"),
}


@pytest.mark.parametrize("variant", list(MIX_VARIANTS))
def test_mix_psgan_stage_switch(benchmark, variant):
    if "triton" in variant and not CUDA:
        pytest.skip(NO_GPU)
    old, new = _stage_networks(1), _stage_networks(2)
    fn = MIX_VARIANTS[variant]

    def switch():
        for o, n in zip(old, new):
            fn(o, n, 0.1)

    params = sum(p.numel() for n in new for p in n.parameters())
    _run(benchmark, switch, f"mix: PS-GAN stage 1->2, 2 G + D, {params / 1e6:.2f}M params",
         variant, baseline=variant.startswith("psgan_fast ref"))
