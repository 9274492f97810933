"""D's routed backward: one backward pass through PS-GAN's discriminator
for both of Algorithm 2's losses (the recipe's default, `PSGANRecipe.step`).

D scores every image alone (no normalisation, `psgan_fast.stages`), so for
any loss L(logits) the gradient reaching image i's activations at any layer
is c_i * J_i, with c_i = dL/dlogit_i a scalar per image and J_i the
gradient of logit_i itself ("unit" backward). Algorithm 2 needs two such
backward passes over the same forward - D's loss into D's weights (c = c_d)
and the generators' loss into the fakes (c = c_g) - which differ only in
those per-image scalars (`psgan_fast.loss.LossOutput.backward` runs them).
The routed layers therefore run the unit backward ONCE through D (seed 1 at
every logit) and apply the scalars where they are needed: each layer's
weight and bias gradient uses c_d-weighted gradients, and the first layer's
input gradient is c_g-weighted (and computed only for the rows that need
it, the fakes). This is the same gradient as two backward passes, up to
float rounding, at the cost of one backward through D's activations instead
of two.

The pieces: `GradRoute` carries the scalars, `routed_backward` computes them
from the loss and runs the pass, and `routed_conv2d` / `routed_linear` are
D's layers with that backward (`psgan_fast.stages.Discriminator.forward(x,
route)`). `psgan_fast.loss` re-exports GradRoute and routed_backward.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from psgan_fast.loss import LossOutput


class GradRoute:
    """Per-image gradient scalars for D's routed backward
    (`psgan_fast.stages.Discriminator.forward(x, route)`).

    Pass one to D's forward, then call `routed_backward`: it evaluates the
    loss on the detached logits, stores c_d = d(d_loss)/d(logits) in `d` and
    c_g = d(g_loss)/d(logits) in `g` (flattened in D's row order), and runs
    ONE backward through D seeded with ones. D's layers weight their
    parameter gradients by `d` and the input gradient by `g`, so D's
    parameters receive exactly d_loss's gradient and the images (the fakes,
    hence the generators) exactly g_loss's - what `LossOutput.backward`'s two
    passes give, with one backward through D's activations instead of two.
    Valid because D scores each image alone (no batch statistics).
    `input_rows`: the rows whose input gradient is needed (the fakes)."""

    def __init__(self, input_rows: slice = slice(None)) -> None:
        self.input_rows = input_rows
        self.d: torch.Tensor | None = None
        self.g: torch.Tensor | None = None


def routed_backward(logits: torch.Tensor, loss_fn, route: GradRoute,
                    g_extra: Optional[torch.Tensor] = None) -> "LossOutput":
    """`loss_fn` (a `psgan_fast.loss` function) on `logits` [N+1, B], which
    came from D's forward with `route`; fills `route` and runs the one
    backward pass. `g_extra`: a scalar of the generators' outputs alone (no
    D in its graph; the mode-seeking term) whose gradient joins the same pass
    at the fakes, so the generators are still traversed once. Returns the
    loss's `LossOutput` with its values detached."""
    live = logits.detach().float().requires_grad_(True)
    with torch.enable_grad():
        out = loss_fn(live)
        c_d, = torch.autograd.grad(out.d_loss, live, retain_graph=True)
        c_g, = torch.autograd.grad(out.g_loss, live)
    route.d, route.g = c_d.reshape(-1), c_g.reshape(-1)
    if g_extra is None:
        logits.backward(torch.ones_like(logits))
    else:
        torch.autograd.backward([logits, g_extra], [torch.ones_like(logits), torch.ones_like(g_extra)])
    route.d = route.g = None  # the backward is done; do not keep the tensors alive
    return dataclasses.replace(out, d_loss=out.d_loss.detach(), g_loss=out.g_loss.detach(),
                               g_losses=out.g_losses.detach())


def _compute_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None


def _cast(t: Optional[torch.Tensor], dtype: Optional[torch.dtype]) -> Optional[torch.Tensor]:
    return t if t is None or dtype is None or t.dtype == dtype else t.to(dtype)


def _rows(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scale.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class _RoutedConv(torch.autograd.Function):
    """conv2d (autocast-aware) whose backward is the unit backward for the
    input and c_d-weighted for weight and bias (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, route, first):
        dtype = _compute_dtype(x)
        xc, wc, bc = _cast(x, dtype), _cast(weight, dtype), _cast(bias, dtype)
        with torch.autocast(x.device.type, enabled=False):
            y = nn.functional.conv2d(xc, wc, bc, stride, padding)
        ctx.save_for_backward(xc, wc)
        ctx.conf = (list(stride), list(padding), route, first, x.dtype, weight.dtype,
                    None if bias is None else (bias.dtype, bias.shape[0]))
        return y

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        stride, padding, route, first, x_dtype, w_dtype, bias_info = ctx.conf
        grad = grad.to(x.dtype)
        gx = gw = gb = None

        def conv_bwd(g, inp, mask):
            return torch.ops.aten.convolution_backward(
                g, inp, w, None if bias_info is None else [bias_info[1]], stride, padding, [1, 1],
                False, [0, 0], 1, mask)

        if ctx.needs_input_grad[0]:
            if first:  # D's input: c_g-weighted, and only the rows that need it
                rows = route.input_rows
                part = conv_bwd(grad[rows], x[rows], [True, False, False])[0]
                part = part * _rows(route.g[rows], part)
                if part.shape[0] == x.shape[0]:
                    gx = part.to(x_dtype)
                else:  # the other rows (the real images) get no gradient
                    gx = x.new_zeros(x.shape, dtype=x_dtype)
                    gx[rows] = part
            else:
                gx = conv_bwd(grad, x, [True, False, False])[0].to(x_dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            has_bias = bias_info is not None
            if x.numel() < grad.numel():
                # Weight the (smaller) input instead of the gradient - the same
                # sum over images; D's first layer has 1 input channel and 16
                # output ones. The bias gradient is then the d-weighted sum of
                # each image's gradient total.
                gw = conv_bwd(grad, x * _rows(route.d, x), [False, True, False])[1]
                if has_bias:  # sum_i d_i * sum_hw grad_i: one matrix-vector product
                    rows = grad.permute(0, 2, 3, 1).reshape(grad.shape[0], -1)  # a view if channels_last
                    gb = torch.mv(rows.t(), route.d.to(rows.dtype)).view(-1, grad.shape[1]).sum(0)
            else:
                _, gw, gb = conv_bwd(grad * _rows(route.d, grad), x, [False, True, has_bias])
            gw = gw.to(w_dtype)
            gb = gb.to(bias_info[0]) if has_bias else None
        return gx, gw, gb, None, None, None, None


class _RoutedLinear(torch.autograd.Function):
    """linear (autocast-aware) with the routed backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, route):
        dtype = _compute_dtype(x)
        xc, wc, bc = _cast(x, dtype), _cast(weight, dtype), _cast(bias, dtype)
        with torch.autocast(x.device.type, enabled=False):
            y = nn.functional.linear(xc, wc, bc)
        ctx.save_for_backward(xc, wc)
        ctx.conf = (route, x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        route, x_dtype, w_dtype, b_dtype = ctx.conf
        grad = grad.to(x.dtype)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = (grad @ w).to(x_dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            gd = grad * _rows(route.d, grad)
            gw = (gd.t() @ x).to(w_dtype)
            gb = gd.sum(0).to(b_dtype) if b_dtype is not None else None
        return gx, gw, gb, None


def routed_conv2d(m: nn.Conv2d, x: torch.Tensor, route: GradRoute, first: bool = False) -> torch.Tensor:
    """`m(x)` with the routed backward; `first`: D's input layer, whose input
    gradient (c_g-weighted, `route.input_rows` only) reaches the fakes."""
    return _RoutedConv.apply(x, m.weight, m.bias, m.stride, m.padding, route, first)


def routed_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  route: GradRoute) -> torch.Tensor:
    """`linear(x, weight, bias)` with the routed backward."""
    return _RoutedLinear.apply(x, weight, bias, route)
