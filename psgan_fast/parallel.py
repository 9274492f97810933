"""Running PS-GAN's N generators on one batch (`--parallel`).

Modes:

* ``sequential`` - a Python loop, one generator after another.
* ``fused`` - all N generators in one batched computation:
  ``torch.func.vmap`` over ``functional_call`` of one stateless copy of the
  architecture, with the generators' parameters stacked on every call
  (``torch.stack`` is differentiable, so gradients land in each generator's
  own ``.grad`` and each generator's optimiser works unchanged). BatchNorm
  stays per generator: its batch statistics are taken per vmapped slice, and
  its running statistics are updated in stacked copies of the buffers which
  are written back into each generator after the call (train mode only).
  It runs in fp32 even under bf16 autocast: vmap's BatchNorm rule rejects
  autocast's mixed dtypes (bf16 activations, fp32 statistics).
* ``streams`` - on CUDA, each generator on its own CUDA stream (the forward
  is enqueued per stream; autograd runs each backward op on the stream of
  its forward). Elsewhere it falls back to ``sequential``, with a one-line
  notice logged once.
* ``auto`` - per device, from measurements: ``sequential`` on the CPU
  (the table below: fused is slower at every N). On CUDA also
  ``sequential`` for now: the build machine has no GPU, so neither
  ``streams`` nor ``fused`` has been run or timed there, and an untried path
  should not be the default; measure with
  `psgan_fast.bench.parallel_modes.benchmark(device="cuda")` and change this
  when a GPU is at hand.

All modes take the same z and give the same results up to float reordering
(tested for fused vs sequential, forward and gradients).

Measured on this project's 2-core CPU (Xeon, AVX-512/AMX, torch 2.15),
stage-2 (28x28) generators at the default width 64, batch 64, forward +
backward of all N generators, milliseconds per call (min / median of 15,
modes alternating call by call). The machine was shared (load average 4-6),
so single-thread figures are the reliable ones; with 2 threads under that
load OpenMP made every row 2-5x slower and noisier::

    1 thread        sequential        fused
    N = 1           116 / 122         113 / 124   (N = 1 runs the same loop)
    N = 2           144 / 152         246 / 275
    N = 3           209 / 242         369 / 405

    2 threads, the first run (load 3.7-4.6, rising):
    N = 1            50 /  57          52 /  57
    N = 2            81 /  90         139 / 165
    N = 3           116 / (noisy)     215 / (noisy)

vmap turns each convolution into a grouped one and the per-call parameter
stacking adds copies; on this CPU that costs more than the loop's overhead.
Full training steps agree (`python -m psgan_fast.bench.psgan_throughput`).

Command: ``PYTHONPATH=. python -m psgan_fast.bench.parallel_modes --threads 1``.
"""

from __future__ import annotations

import copy
import logging
from typing import Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from psgan_fast.registry import PARALLEL_MODES as MODES

log = logging.getLogger(__name__)

_notified: set[str] = set()


def _notice_once(key: str, message: str) -> None:
    if key not in _notified:
        _notified.add(key)
        log.warning(message)


def resolve_mode(mode: str, device: torch.device) -> str:
    """The concrete mode `mode` means on `device` ("auto" and the streams
    fallback resolved)."""
    if mode not in MODES:
        raise ValueError(f"unknown parallel mode {mode!r}; choose from {', '.join(MODES)}")
    device = torch.device(device)
    if mode == "auto":
        return "sequential"
    if mode == "streams" and device.type != "cuda":
        _notice_once(f"streams-{device.type}",
                     f"--parallel streams needs CUDA; running the generators sequentially on {device.type}")
        return "sequential"
    return mode


class ParallelGenerators:
    """Holds N generators and produces all N fakes for a batch of noise.

    `generators` are the real modules (owned by the caller, who trains them
    with their own optimisers); this object only decides how to run them.
    Call it with z [B, latent] (the same noise for every generator) or
    [N, B, latent] (one noise batch per generator); it returns N tensors.
    """

    def __init__(self, generators: Sequence[nn.Module], mode: str = "auto",
                 device: Optional[torch.device] = None) -> None:
        self.generators = list(generators)
        if not self.generators:
            raise ValueError("need at least one generator")
        if device is None:
            device = next(self.generators[0].parameters()).device
        self.device = torch.device(device)
        self.requested = mode
        self.mode = resolve_mode(mode, self.device)
        self._streams: list[torch.cuda.Stream] = []
        self._template: Optional[nn.Module] = None
        self._template_src: Optional[nn.Module] = None

    def __len__(self) -> int:
        return len(self.generators)

    def __call__(self, z: torch.Tensor) -> list[torch.Tensor]:
        n = len(self.generators)
        if z.dim() == 3 and z.shape[0] != n:
            raise ValueError(f"per-generator noise must be [N={n}, B, latent], got {tuple(z.shape)}")
        zs = list(z) if z.dim() == 3 else [z] * n
        if self.mode == "fused" and n > 1:
            return self._fused(z)
        if self.mode == "streams" and n > 1:
            return self._streams_run(zs)
        return [g(zk) for g, zk in zip(self.generators, zs)]

    # -- fused -----------------------------------------------------------
    def _fused(self, z: torch.Tensor) -> list[torch.Tensor]:
        gens = self.generators
        first = gens[0]
        if self._template is None or self._template_src is not first:
            # A storage-free copy of the architecture for functional_call.
            self._template = copy.deepcopy(first).to("meta")
            self._template_src = first
        self._template.train(first.training)
        named_p = [dict(g.named_parameters()) for g in gens]
        named_b = [dict(g.named_buffers()) for g in gens]
        params = {k: torch.stack([p[k] for p in named_p]) for k in named_p[0]}
        buffers = {k: torch.stack([b[k] for b in named_b]) for k in named_b[0]}
        template = self._template

        def run(p, b, zk):
            return functional_call(template, (p, b), (zk,))

        # vmap's BatchNorm rule rejects autocast's mixed dtypes (bf16 input,
        # fp32 statistics), so the fused path always runs in fp32.
        with torch.autocast(self.device.type, enabled=False):
            out = vmap(run, in_dims=(0, 0, 0 if z.dim() == 3 else None), randomness="different")(
                params, buffers, z.float())
        if first.training:
            with torch.no_grad():  # write the updated running statistics back
                for k, stacked in buffers.items():
                    for i, b in enumerate(named_b):
                        b[k].copy_(stacked[i])
        return list(out.unbind(0))

    # -- streams ---------------------------------------------------------
    def _streams_run(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(self._streams) != len(self.generators):
            self._streams = [torch.cuda.Stream(device=self.device) for _ in self.generators]
        current = torch.cuda.current_stream(self.device)
        outs = []
        for g, zk, s in zip(self.generators, zs, self._streams):
            s.wait_stream(current)  # z (and the weights) are ready on `current`
            with torch.cuda.stream(s):
                out = g(zk)
            zk.record_stream(s)  # keep z's memory alive until s is done with it
            outs.append(out)
        for s, out in zip(self._streams, outs):
            current.wait_stream(s)
            out.record_stream(current)
        return outs
