"""Spectral normalisation (SNGAN, Miyato et al. 2018), fused in Triton.

For a weight W viewed as a matrix [out, -1] (Linear, Conv; ``dim`` first),
one power iteration per *training* forward with persistent vectors u, v::

    v = normalize(W^T u)      u = normalize(W v)      sigma = u^T W v
    weight = W / sigma

and gradients flow through W / sigma with u and v held constant. In eval mode
the stored u, v are used without updating. This is Algorithm 1 of the SNGAN
paper and exactly what the legacy ``torch.nn.utils.spectral_norm`` computes
(the tests check it against that, step for step). Like
``torch.nn.utils.parametrizations.spectral_norm`` it is a parametrization:
``module.weight`` is the normalised weight, the state dict holds
``parametrizations.weight.original`` and the ``_u``/``_v`` buffers, and the
vectors are warmed up by 15 power iterations when it is applied. (torch's
parametrization orders each iteration the other way round, u first and v
last; both converge to the same sigma, but only the legacy function matches
step for step.)

The power iteration and sigma run with autocast disabled, in the weight's
own dtype (float32 in our models), even inside a bf16 autocast region: u and
v persist across steps, and rounding them to bf16 at every step would degrade
the estimate that scales every logit of D. Only the layer's own op (conv,
linear) then runs in bf16.

Triton path (:class:`_SpectralNormTriton`): forward = 3 launches for
``n_power_iterations=1`` (W^T u per column block; W v per row block; one
elementwise pass that finishes sigma, writes u and v and W / sigma), backward
= 2 launches (the partial sums of <G, W>, then
``dW = (G - (<G, W> / sigma) u v^T) / sigma``). Partial sums are written per
program and re-summed in a fixed order, so results are deterministic (no
atomics). The reference runs about 15 kernels forward and 9 backward (its
ATen ops, counted with the profiler on the CPU); not yet timed on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import psgan_fast.kernels as _k

try:  # only the kernel sources below need these names; see kernels/__init__.py
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - Triton missing or broken
    triton = tl = None

INIT_POWER_ITERATIONS = 15

# Tile sizes (untuned: chosen for the small SNGAN weights, <= ~1M elements).
_BLOCK_H1, _BLOCK_K1 = 32, 64     # W^T x: one program per 64 columns, loop over rows
_BLOCK_H2, _BLOCK_K2 = 8, 256     # W t:   one program per 8 rows, loop over columns
_BLOCK_E = 1024                   # elementwise passes
_MAX_PARTS = 256                  # programs (and partial sums) of the backward reduction


# ----------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------

def _spectral_normalize_ref(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, training: bool,
                            n_power_iterations: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if training:
        with torch.no_grad():
            for _ in range(n_power_iterations):
                v.copy_(F.normalize(torch.mv(w.t(), u), dim=0, eps=eps))
                u.copy_(F.normalize(torch.mv(w, v), dim=0, eps=eps))
    # Clones: a later forward updates the buffers in place while this graph may
    # still need the vectors for its backward (D(real) and D(fake) in one step).
    u_c = u.clone(memory_format=torch.contiguous_format)
    v_c = v.clone(memory_format=torch.contiguous_format)
    sigma = torch.dot(u_c, torch.mv(w, v_c))
    return w / sigma, sigma.detach()


# ----------------------------------------------------------------------------------------------
# Triton kernels (plain functions, jitted lazily by psgan_fast.kernels._jit)
# ----------------------------------------------------------------------------------------------

def _sn_wt_x_kernel(w_ptr, x_ptr, xpart_ptr, n_xpart, t_ptr, tpart_ptr, H, K, eps,
                    X_SCALED: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                    BLOCK_P: tl.constexpr):
    """t[cols] = W[:, cols]^T x (scaled by 1/max(|x|, eps) when X_SCALED, the
    norm coming from the previous kernel's partial sums); tpart[pid] = |t[cols]|^2."""
    pid = tl.program_id(0)
    cols = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    cmask = cols < K
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        rows = h0 + tl.arange(0, BLOCK_H)
        rmask = rows < H
        x = tl.load(x_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rows[:, None] * K + cols[None, :],
                    mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(w * x[:, None], axis=0)
    if X_SCALED:
        p = tl.arange(0, BLOCK_P)
        ss = tl.sum(tl.load(xpart_ptr + p, mask=p < n_xpart, other=0.0), axis=0)
        acc = acc / tl.maximum(tl.sqrt(ss), eps)
    tl.store(t_ptr + cols, acc, mask=cmask)
    tl.store(tpart_ptr + pid, tl.sum(acc * acc, axis=0))


def _sn_w_t_kernel(w_ptr, t_ptr, tpart_ptr, n_tpart, u_ptr, s_ptr, spart_ptr, H, K, eps,
                   T_SCALED: tl.constexpr, DOT: tl.constexpr, BLOCK_H: tl.constexpr,
                   BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
    """s[rows] = W[rows, :] t (t scaled to unit norm when T_SCALED);
    spart[pid] = u[rows].s[rows] when DOT (eval: sigma = u^T W v) else |s[rows]|^2."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_H + tl.arange(0, BLOCK_H)
    rmask = rows < H
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        cmask = cols < K
        t = tl.load(t_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rows[:, None] * K + cols[None, :],
                    mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(w * t[None, :], axis=1)
    if T_SCALED:
        p = tl.arange(0, BLOCK_P)
        ts = tl.sum(tl.load(tpart_ptr + p, mask=p < n_tpart, other=0.0), axis=0)
        acc = acc / tl.maximum(tl.sqrt(ts), eps)
    tl.store(s_ptr + rows, acc, mask=rmask)
    if DOT:
        u = tl.load(u_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
        tl.store(spart_ptr + pid, tl.sum(u * acc, axis=0))
    else:
        tl.store(spart_ptr + pid, tl.sum(acc * acc, axis=0))


def _sn_finalize_kernel(w_ptr, out_ptr, s_ptr, spart_ptr, n_spart, t_ptr, tpart_ptr, n_tpart,
                        u_ptr, v_ptr, usave_ptr, vsave_ptr, sigma_ptr, H, K, N, eps,
                        UPDATE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_PS: tl.constexpr,
                        BLOCK_PT: tl.constexpr):
    """sigma from the partial sums; u, v written back (UPDATE) and copied for
    the backward; out = W / sigma. Program i also owns u[i*BLOCK:...] and v[...]."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    ps = tl.arange(0, BLOCK_PS)
    total = tl.sum(tl.load(spart_ptr + ps, mask=ps < n_spart, other=0.0), axis=0)
    umask = offs < H
    vmask = offs < K
    if UPDATE:
        # u = s / max(|s|, eps), so sigma = u.s = |s|^2 / max(|s|, eps).
        snorm = tl.maximum(tl.sqrt(total), eps)
        sigma = total / snorm
        pt = tl.arange(0, BLOCK_PT)
        tnorm = tl.maximum(tl.sqrt(tl.sum(tl.load(tpart_ptr + pt, mask=pt < n_tpart, other=0.0),
                                          axis=0)), eps)
        u_new = tl.load(s_ptr + offs, mask=umask, other=0.0) / snorm
        v_new = tl.load(t_ptr + offs, mask=vmask, other=0.0) / tnorm
        tl.store(u_ptr + offs, u_new.to(u_ptr.dtype.element_ty), mask=umask)
        tl.store(v_ptr + offs, v_new.to(v_ptr.dtype.element_ty), mask=vmask)
    else:
        sigma = total
        u_new = tl.load(u_ptr + offs, mask=umask, other=0.0)
        v_new = tl.load(v_ptr + offs, mask=vmask, other=0.0)
    tl.store(usave_ptr + offs, u_new.to(usave_ptr.dtype.element_ty), mask=umask)
    tl.store(vsave_ptr + offs, v_new.to(vsave_ptr.dtype.element_ty), mask=vmask)
    nmask = offs < N
    w = tl.load(w_ptr + offs, mask=nmask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (w / sigma).to(out_ptr.dtype.element_ty), mask=nmask)
    if pid == 0:
        tl.store(sigma_ptr, sigma)


def _sn_bwd_dot_kernel(g_ptr, w_ptr, part_ptr, N, BLOCK: tl.constexpr, NPROG: tl.constexpr):
    """part[pid] = sum of G * W over a grid-stride share of the elements."""
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(pid * BLOCK, N, NPROG * BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < N
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
        acc += g * w
    tl.store(part_ptr + pid, tl.sum(acc, axis=0))


def _sn_bwd_kernel(g_ptr, u_ptr, v_ptr, sigma_ptr, part_ptr, n_part, gw_ptr, K, N,
                   BLOCK: tl.constexpr, BLOCK_P: tl.constexpr):
    """dW = (G - c u v^T) / sigma with c = <G, W> / sigma (u, v constants)."""
    pid = tl.program_id(0)
    p = tl.arange(0, BLOCK_P)
    gw_dot = tl.sum(tl.load(part_ptr + p, mask=p < n_part, other=0.0), axis=0)
    sigma = tl.load(sigma_ptr)
    c = gw_dot / sigma
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    rows = offs // K
    cols = offs - rows * K
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + rows, mask=m, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(gw_ptr + offs, ((g - c * u * v) / sigma).to(gw_ptr.dtype.element_ty), mask=m)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(int(n)))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _sn_forward_triton(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, training: bool,
                       n_power_iterations: int, eps: float):
    """Launch the forward kernels; returns (W / sigma, sigma [fp32 0-d], u used, v used)."""
    H, K = w.shape
    N = H * K
    if N >= 2 ** 31:
        raise ValueError(f"weight too large for the spectral-norm kernels ({N} elements)")
    dev = w.device
    f32 = dict(device=dev, dtype=torch.float32)
    n1, n2 = _cdiv(K, _BLOCK_K1), _cdiv(H, _BLOCK_H2)
    t, tpart = torch.empty(K, **f32), torch.empty(n1, **f32)
    s, spart = torch.empty(H, **f32), torch.empty(n2, **f32)
    wt_x = _k._jit(_sn_wt_x_kernel)
    w_t = _k._jit(_sn_w_t_kernel)
    if training:
        for it in range(n_power_iterations):
            # First iteration starts from the stored u; later ones from the last s.
            x, scaled = (u, False) if it == 0 else (s, True)
            wt_x[(n1,)](w, x, spart, n2, t, tpart, H, K, eps, X_SCALED=scaled,
                        BLOCK_H=_BLOCK_H1, BLOCK_K=_BLOCK_K1, BLOCK_P=_pow2(n2))
            w_t[(n2,)](w, t, tpart, n1, u, s, spart, H, K, eps, T_SCALED=True, DOT=False,
                       BLOCK_H=_BLOCK_H2, BLOCK_K=_BLOCK_K2, BLOCK_P=_pow2(n1))
    else:
        w_t[(n2,)](w, v, tpart, n1, u, s, spart, H, K, eps, T_SCALED=False, DOT=True,
                   BLOCK_H=_BLOCK_H2, BLOCK_K=_BLOCK_K2, BLOCK_P=_pow2(n1))
    out = torch.empty_like(w)
    u_save, v_save = torch.empty_like(u), torch.empty_like(v)
    sigma = torch.empty((), **f32)
    _k._jit(_sn_finalize_kernel)[(_cdiv(N, _BLOCK_E),)](
        w, out, s, spart, n2, t, tpart, n1, u, v, u_save, v_save, sigma, H, K, N, eps,
        UPDATE=training, BLOCK=_BLOCK_E, BLOCK_PS=_pow2(n2), BLOCK_PT=_pow2(n1))
    return out, sigma, u_save, v_save


def _sn_backward_triton(g: torch.Tensor, w: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                        sigma: torch.Tensor) -> torch.Tensor:
    H, K = w.shape
    N = H * K
    nprog = min(_MAX_PARTS, _cdiv(N, _BLOCK_E))
    part = torch.empty(nprog, device=w.device, dtype=torch.float32)
    _k._jit(_sn_bwd_dot_kernel)[(nprog,)](g, w, part, N, BLOCK=_BLOCK_E, NPROG=nprog)
    gw = torch.empty_like(w)
    _k._jit(_sn_bwd_kernel)[(_cdiv(N, _BLOCK_E),)](g, u, v, sigma, part, nprog, gw, K, N,
                                                   BLOCK=_BLOCK_E, BLOCK_P=_pow2(nprog))
    return gw


class _SpectralNormTriton(torch.autograd.Function):
    """W [out, in] -> (W / sigma, sigma); u, v (buffers) updated in place when training."""

    @staticmethod
    def forward(ctx, w, u, v, training, n_power_iterations, eps):
        w = w.contiguous()
        out, sigma, u_used, v_used = _sn_forward_triton(w, u, v, training, n_power_iterations, eps)
        ctx.save_for_backward(w, u_used, v_used, sigma)
        ctx.mark_non_differentiable(sigma)
        return out, sigma

    @staticmethod
    def backward(ctx, grad_out, grad_sigma):
        w, u, v, sigma = ctx.saved_tensors
        gw = _sn_backward_triton(grad_out.contiguous(), w, u, v, sigma)
        return gw, None, None, None, None, None


@torch.compiler.disable
def _spectral_normalize_triton(w, u, v, training, n_power_iterations, eps):
    return _SpectralNormTriton.apply(w, u, v, training, n_power_iterations, eps)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def spectral_normalize(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *, training: bool = True,
                       n_power_iterations: int = 1, eps: float = 1e-12,
                       impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """W / sigma(W) for a matrix ``w`` [h, k] with persistent vectors ``u`` [h], ``v`` [k].

    When ``training``, runs ``n_power_iterations`` power iterations first and
    writes the new u, v into the given tensors in place. Returns
    ``(w / sigma, sigma)``; the gradient flows into ``w`` through w / sigma
    with u, v constant, and the returned sigma is detached.
    """
    if w.ndim != 2 or u.shape != (w.shape[0],) or v.shape != (w.shape[1],):
        raise ValueError(f"expected w [h, k], u [h], v [k]; got {tuple(w.shape)}, "
                         f"{tuple(u.shape)}, {tuple(v.shape)}")
    if n_power_iterations < 1:
        raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
    if _k._use_triton(impl, w, u, v):
        if impl == "triton":
            return _spectral_normalize_triton(w, u, v, training, n_power_iterations, eps)
        try:  # impl="auto": a failure here (a compile error) happens before u, v change
            return _spectral_normalize_triton(w, u, v, training, n_power_iterations, eps)
        except Exception as exc:
            _k._disable_auto(exc)
    return _spectral_normalize_ref(w, u, v, training, n_power_iterations, eps)


class _SpectralNorm(nn.Module):
    """The parametrization: original weight -> weight / sigma (see module docstring)."""

    def __init__(self, weight: torch.Tensor, *, n_power_iterations: int, dim: int, eps: float,
                 impl: str) -> None:
        super().__init__()
        if weight.ndim < 2:
            raise ValueError(f"spectral_norm needs a weight with >= 2 dims, got {tuple(weight.shape)}")
        if impl not in _k.IMPLS:
            raise ValueError(f"impl must be one of {_k.IMPLS}, got {impl!r}")
        self.dim = dim % weight.ndim
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        self.impl = impl
        with torch.no_grad():
            w = self._to_matrix(weight.detach()).float()
            u = F.normalize(torch.randn(w.shape[0], device=w.device), dim=0, eps=eps)
            v = F.normalize(torch.mv(w.t(), u), dim=0, eps=eps)
            _spectral_normalize_ref(w, u, v, True, INIT_POWER_ITERATIONS, eps)
        self.register_buffer("_u", u.to(weight.dtype))
        self.register_buffer("_v", v.to(weight.dtype))

    def _to_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        if self.dim != 0:
            weight = weight.movedim(self.dim, 0)
        return weight.flatten(1)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            w_mat = self._to_matrix(weight)
            out, _ = spectral_normalize(w_mat, self._u, self._v, training=self.training,
                                        n_power_iterations=self.n_power_iterations,
                                        eps=self.eps, impl=self.impl)
        if self.dim == 0:
            return out.view(weight.shape)
        shape = list(weight.shape)
        shape.insert(0, shape.pop(self.dim))
        return out.view(shape).movedim(0, self.dim)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        # Assigning module.weight = X stores X as the original (as torch does).
        return value

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}, n_power_iterations={self.n_power_iterations}, dim={self.dim}"


def spectral_norm(module: nn.Module, *, impl: str = "auto", n_power_iterations: int = 1,
                  eps: float = 1e-12, name: str = "weight", dim: int | None = None) -> nn.Module:
    """Apply spectral normalisation to ``module.<name>`` (Linear, Conv*) in place.

    ``dim`` is the output dimension (default 0; 1 for ConvTranspose*, as in
    torch). Returns the module, whose ``<name>`` now reads as W / sigma.
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"module {type(module).__name__} has no tensor {name!r}")
    if parametrize.is_parametrized(module, name):
        raise ValueError(f"{type(module).__name__}.{name} is already parametrized")
    if dim is None:
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                                       nn.ConvTranspose3d)) else 0
    param = _SpectralNorm(weight, n_power_iterations=n_power_iterations, dim=dim, eps=eps,
                          impl=impl)
    parametrize.register_parametrization(module, name, param, unsafe=True)
    return module


@torch.no_grad()
def spectral_sigma(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """u^T W v from the stored vectors: the sigma the last training forward
    divided by (while W has not changed since). Does not update u or v."""
    param = parametrize_of(module, name)
    w = module.parametrizations[name].original
    w_mat = param._to_matrix(w).float()
    return torch.dot(param._u.float(), torch.mv(w_mat, param._v.float()))


def parametrize_of(module: nn.Module, name: str = "weight") -> _SpectralNorm:
    """The spectral-norm parametrization of ``module.<name>`` (ValueError if none)."""
    if parametrize.is_parametrized(module, name):
        for p in module.parametrizations[name]:
            if isinstance(p, _SpectralNorm):
                return p
    raise ValueError(f"{type(module).__name__}.{name} has no spectral norm")
