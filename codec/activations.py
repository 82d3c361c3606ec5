"""Activations of the codec: snake, half-snake (NanoCodec's decoder), leaky ReLU (its encoder), output clamp.

    Snake(x)      = x + 1 / (alpha + 1e-9) * sin(alpha * x)^2       alpha: learned per channel, init 1
                    (Ziyin et al. 2020, "Neural networks fail to learn periodic functions"; BigVGAN)
    HalfSnake(x)  = cat(Snake(x[:, :C // 2]), LeakyReLU_0.01(x[:, C // 2:]))   (NanoCodec / low-frame-rate codec)

All are elementwise over [B, C, T] (no state, so streaming needs nothing). Without autograd (inference, streaming)
snake runs fused: 1 / (alpha + eps) is kept until alpha changes, and the rest is computed in place in one output
buffer (half-snake: both halves written into it, no concatenation), in the same order of operations, so the
result is bit-for-bit the training formula's (tests/test_codec_model.py). The numbers (eps 1e-9 inside the
reciprocal, PyTorch's default leaky slope 0.01, snake on the FIRST C // 2 channels) follow NVIDIA NeMo, and
so do the module names (`CodecActivation.activation`, `HalfSnake.snake_act.alpha`) so checkpoints load.
"""

from __future__ import annotations

import torch
from torch import nn

from common.derived import DerivedWeight, version_key

ACTIVATIONS = ("lrelu", "elu", "snake", "half_snake")
SNAKE_EPS = 1e-9


def snake(x: torch.Tensor, alpha: torch.Tensor, eps: float = SNAKE_EPS) -> torch.Tensor:
    """x + (alpha + eps)^-1 * sin(alpha * x)^2, with alpha [1, C, 1] broadcast over [B, C, T]."""
    return x + (alpha + eps).reciprocal() * torch.sin(alpha * x).pow(2)


def snake_into(out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, inv_alpha: torch.Tensor) -> torch.Tensor:
    """`snake(x, alpha)` written into `out` (same shape as x) in place, given inv_alpha = 1 / (alpha + eps).

    The same operations in the same order as `snake` (products commute exactly), so the same bits; no autograd.
    """
    torch.mul(alpha, x, out=out)
    out.sin_().square_().mul_(inv_alpha)  # (alpha + eps)^-1 * sin(alpha * x)^2
    return out.add_(x)


def half_snake_into(
    out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, inv_alpha: torch.Tensor, slope: float
) -> torch.Tensor:
    """Half-snake of x [..., C, T] written into `out` (same shape): snake on the first h channels (alpha and
    inv_alpha [..., h, 1], h = alpha.shape[-2]), leaky ReLU on the rest; no autograd. Leading dims broadcast, so
    the three branches of a residual layer run as one call on [3, B, C, T] with their alphas stacked."""
    h = alpha.shape[-2]
    snake_into(out[..., :h, :], x[..., :h, :], alpha, inv_alpha)
    torch._C._nn.leaky_relu(x[..., h:, :], slope, out=out[..., h:, :])
    return out


class _HalfSnakeFunction(torch.autograd.Function):
    """Half-snake with its gradient written out, for training: the forward gives `half_snake`'s bits, the backward
    autograd's derivatives of `snake` / leaky ReLU (equal to float rounding).

    Why: in channels-last memory ([B, T, C] storage) the two halves of the channels interleave, and torch's
    elementwise kernels on a half (runs of C / 2 values) are ~25x slower than on dense memory; autograd's
    slices + cat also hand the next conv [B, C, T] order, which it copies back. Here the leaky ReLU (and its
    backward) run over ALL channels densely, the snake half is gathered into its own dense [B, C / 2, T] block,
    computed there and written back over the first half; the output and gradient keep x's layout. CPU decoder's
    8-channel stage, [8, 8, 14112], one thread: 7.1 -> 1.3 ms forward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, slope: float) -> torch.Tensor:  # noqa: ANN001
        h = alpha.shape[-2]
        inv_alpha = (alpha + SNAKE_EPS).reciprocal()
        out = torch._C._nn.leaky_relu(x, slope, out=torch.empty_like(x))  # every channel; the snake half is redone
        xs = x[..., :h, :].contiguous()  # (B, h, T) channel-major
        out[..., :h, :].copy_(snake_into(torch.empty_like(xs), xs, alpha, inv_alpha))
        ctx.save_for_backward(x, xs, alpha, inv_alpha)
        ctx.slope = slope
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # noqa: ANN001
        x, xs, alpha, inv_alpha = ctx.saved_tensors
        h = alpha.shape[-2]
        grad_x = torch.ops.aten.leaky_relu_backward(grad, x, ctx.slope, False)  # every channel, as forward
        gs = grad[..., :h, :].contiguous()
        # in place where a buffer is free again: each pass over a [B, C / 2, T] block is memory-bound on a CPU
        ax = alpha * xs
        sin = torch.sin(ax)
        cos = ax.cos_()
        d_ax = (gs * (2 * inv_alpha)).mul_(sin).mul_(cos)  # d loss / d (alpha x); x 2 is exact, so autograd's bits
        grad_x[..., :h, :].copy_(torch.addcmul(gs, d_ax, alpha))
        dims = [i for i in range(xs.dim()) if i != xs.dim() - 2]
        # alpha's two paths: inside sin(alpha x), and through 1 / (alpha + eps) (derivative -inv_alpha^2)
        grad_alpha = d_ax.mul_(xs).sum(dims, keepdim=True)
        grad_alpha -= sin.square_().mul_(gs).sum(dims, keepdim=True) * inv_alpha.square()
        return grad_x, grad_alpha, None


def _needs_autograd(x: torch.Tensor, alpha: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad)


class Snake(nn.Module):
    """Snake with a learnable frequency per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))
        self._inv_alpha = DerivedWeight()  # 1 / (alpha + eps), remade when alpha changes

    def inv_alpha(self) -> torch.Tensor:
        """1 / (alpha + eps) [1, C, 1], recomputed only when alpha changed (in place, moved or replaced)."""
        a = self.alpha

        def make() -> torch.Tensor:
            with torch.no_grad():
                return (a + SNAKE_EPS).reciprocal()

        return self._inv_alpha.get(version_key(a), make)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _needs_autograd(x, self.alpha):
            return snake(x, self.alpha)
        return snake_into(torch.empty_like(x), x, self.alpha, self.inv_alpha())


class HalfSnake(nn.Module):
    """Snake on the first C // 2 channels, leaky ReLU (slope 0.01) on the remaining C - C // 2."""

    fused_backward: bool = True  # training through _HalfSnakeFunction (tests switch it off to compare with autograd)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.snake_channels = channels // 2
        self.snake_act = Snake(self.snake_channels)
        self.lrelu = nn.LeakyReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, alpha = self.snake_channels, self.snake_act.alpha
        if _needs_autograd(x, alpha):
            if self.fused_backward and not torch.onnx.is_in_onnx_export():  # ONNX export traces the formula
                return _HalfSnakeFunction.apply(x, alpha, self.lrelu.negative_slope)
            snake_out = self.snake_act(x[:, :h])  # (B, C // 2, T)
            lrelu_out = self.lrelu(x[:, h:])  # (B, C - C // 2, T)
            return torch.cat([snake_out, lrelu_out], dim=1)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # (B, C, T), contiguous
        return half_snake_into(out, x, alpha, self.snake_act.inv_alpha(), self.lrelu.negative_slope)


class CodecActivation(nn.Module):
    """The activation named in the config: 'lrelu' (slope 0.01), 'elu', 'snake' or 'half_snake'."""

    def __init__(self, activation: str, channels: int) -> None:
        super().__init__()
        name = activation.lower()
        if name == "lrelu":
            self.activation: nn.Module = nn.LeakyReLU()
        elif name == "elu":
            self.activation = nn.ELU()
        elif name == "snake":
            self.activation = Snake(channels)
        elif name == "half_snake":
            self.activation = HalfSnake(channels)
        else:
            raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x)


class OutputActivation(nn.Module):
    """Keeps the waveform in [-1, 1]: 'clamp' (NanoCodec) or 'tanh'."""

    def __init__(self, kind: str = "clamp") -> None:
        super().__init__()
        if kind not in ("clamp", "tanh"):
            raise ValueError(f"unknown output activation {kind!r}; use 'clamp' or 'tanh'")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, -1.0, 1.0) if self.kind == "clamp" else torch.tanh(x)
