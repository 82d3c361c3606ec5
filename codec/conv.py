"""Weight-normed 1-D convolutions of the codec: non-causal 'same' convs, causal (streaming) convs, and
transposed convs for upsampling. Layout everywhere: [B, C, T].

    Conv1dNorm                 [B, C_in, T] -> [B, C_out, T / stride]   symmetric padding (pad_mode)
    CausalConv1dNorm           [B, C_in, T] -> [B, C_out, T / stride]   left context only, streams
    CausalConvTranspose1dNorm  [B, C_in, T] -> [B, C_out, T * stride]   overhang trimmed right, streams
    ConvTranspose1dNorm        [B, C_in, T] -> [B, C_out, T * stride]   symmetric trim (non-causal ablation)

Module and parameter names mirror NVIDIA NeMo's `audio_codec_modules.py` (each layer holds its torch conv as
`.conv`, weight norm is `torch.nn.utils.parametrizations.weight_norm` with dim=0, so the state-dict keys are
`<layer>.conv.parametrizations.weight.original0/1` and `<layer>.conv.bias`), so NanoCodec checkpoints load
by name. NeMo masks every output by a per-utterance length; here every utterance of a batch has the full
length (the codec pads to whole frames), so there is nothing to mask.

Weight norm (Salimans & Kingma 2016) is used in training; `remove_weight_norm(model)` folds it into plain
weights for inference (same outputs, fewer ops per streaming step); inside `streaming()` a weight-normed model
computes each weight once per block (codec/streaming.py), not once per call.

Streaming calls are short (one 80 ms frame is 7 samples at the decoder's first stage, 1764 at its last). For
such inputs a causal conv without autograd runs as ONE im2col matmul: torch's conv kernels repack the weights on
every call, and below ~20k input values they leave oneDNN for a dilated kernel several times slower. The matmul
takes the wide side of the problem as its output columns, which is what MKL is fast at (`gemm_layout`):
    more samples than channels (batch 1): W [C_out, C_in * k] @ columns [C_in * k, T] -> [C_out, T] (`columns_conv1d`;
        the result is already [B, C, T]);
    fewer samples than channels: rows [B * T, C_in * k] @ W^T [C_in * k, C_out] (`gemm_conv1d`, W^T kept in a
        `DerivedWeight`, remade only when the weight changes).
A batch of long inputs keeps torch's kernels, as does every long (offline) input. All compute the same sums: they
agree to float rounding (~1e-7). Measured on one AMD EPYC thread, per conv of the CPU decoder's last stage
(8 channels, 1764 samples, k 11, dilation 5): torch 315 us, rows 336 us, columns 75 us; its first stage
(128 channels, 7 samples): torch 392 us, rows 74 us, columns 270 us.

`set_channels_last(model, True)` runs every conv of these layers as a 2-D conv over [B, C, 1, T] in channels-last
memory (stored [B, T, C]): the same values (to float rounding), but oneDNN's fast layout on CPU, where the
codec's few-channel convs then run ~1.3-2x faster forward + backward. The outputs stay time-major, so the
elementwise layers in between keep the layout and the next conv needs no copy. Off by default (codec.train's
`channels_last` switches it on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from codec.streaming import StreamingModule
from common.derived import DerivedWeight, version_key

PAD_MODES = ("zeros", "reflect", "replicate", "circular")


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """Symmetric 'same' padding of a stride-1 conv: (k - 1) * d / 2 on each side."""
    return (kernel_size * dilation - dilation) // 2


def get_down_sample_padding(kernel_size: int, stride: int) -> int:
    """Symmetric padding of a strided conv with kernel 2 x stride: T -> T / stride for T a multiple of stride."""
    return (kernel_size - stride + 1) // 2


GEMM_MAX_COLUMNS = 4096  # longest output (B x T_out) a conv runs as one matmul (every streamed frame; short offline)


def gemm_layout(batch: int, num_out: int, out_channels: int) -> str | None:
    """Which matmul a conv without autograd runs as: "columns", "rows", or None (torch's conv); see the module doc."""
    if batch * num_out > GEMM_MAX_COLUMNS:
        return None
    if batch == 1 and num_out >= out_channels:
        return "columns"
    return "rows" if batch * num_out < out_channels else None


def gemm_weight(weight: torch.Tensor) -> torch.Tensor:
    """Conv weight [C_out, C_in, k] -> the matmul operand [C_in * k, C_out] (contiguous: MKL packs nothing)."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def gemm_conv1d(
    x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None, kernel_size: int, stride: int, dilation: int
) -> torch.Tensor:
    """An unpadded, ungrouped conv as ONE matmul over im2col rows: x [B, C_in, L] -> [B, C_out, T_out].

    weight_t is `gemm_weight(conv.weight)` [C_in * k, C_out]. Row (b, t) of the im2col matrix holds
    x[b, c, t * stride + j * dilation] for every (c, j), so the whole batch is one [B * T_out, C_in * k] x
    [C_in * k, C_out] product (the same sums as the convolution, so the same result up to float rounding).
    """
    batch, c_in, length = x.shape
    t_out = (length - (kernel_size - 1) * dilation - 1) // stride + 1
    x = x.contiguous()
    sb, sc, st = x.stride()
    rows = x.as_strided((batch, t_out, c_in, kernel_size), (sb, stride * st, sc, dilation * st))  # (B, T, C_in, k)
    rows = rows.reshape(batch * t_out, c_in * kernel_size)  # (B * T_out, C_in * k), one copy
    y = torch.addmm(bias, rows, weight_t) if bias is not None else rows @ weight_t  # (B * T_out, C_out)
    return y.view(batch, t_out, -1).transpose(1, 2).contiguous()  # (B, C_out, T_out)


def columns_conv1d(
    x: torch.Tensor, weight_2d: torch.Tensor, bias: torch.Tensor | None, kernel_size: int, stride: int, dilation: int
) -> torch.Tensor:
    """An unpadded, ungrouped conv of ONE input as one matmul: x [1, C_in, L] -> [1, C_out, T_out].

    weight_2d is the conv weight as [C_out, C_in * k]; column t of the im2col matrix holds x[c, t * stride + j *
    dilation] for every (c, j), so the output comes out in the [C, T] layout, with no transpose.
    """
    _, c_in, length = x.shape
    t_out = (length - (kernel_size - 1) * dilation - 1) // stride + 1
    x = x.contiguous()
    _, sc, st = x.stride()
    columns = x.as_strided((c_in, kernel_size, t_out), (sc, dilation * st, stride * st))  # (C_in, k, T_out)
    columns = columns.reshape(c_in * kernel_size, t_out)  # one copy
    y = weight_2d @ columns if bias is None else torch.addmm(bias[:, None], weight_2d, columns)  # (C_out, T_out)
    return y[None]


def weight_norm(module: nn.Module) -> nn.Module:
    """Weight norm over dim 0 in parametrization form (NeMo's choice; dim 0 is C_in for transposed convs)."""
    return nn.utils.parametrizations.weight_norm(module, name="weight", dim=0)


def remove_weight_norm(module: nn.Module) -> int:
    """Fold every weight-norm parametrization under `module` into a plain `weight`; returns how many."""
    count = 0
    with torch.enable_grad():  # under no_grad torch would leave a plain tensor, not a Parameter
        for m in module.modules():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
                count += 1
    return count


def has_weight_norm(module: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m, "weight") for m in module.modules())


def set_channels_last(module: nn.Module, enabled: bool) -> int:
    """Run the convs of every layer of this file under `module` in channels-last memory (or not); returns how many."""
    layers = [m for m in module.modules() if isinstance(m, ConvLayer)]
    for m in layers:
        m.channels_last = enabled
    return len(layers)


def pad_edges(x: torch.Tensor, padding: int, mode: str) -> torch.Tensor:
    """F.pad(x, (padding, padding), mode) of x [B, C, T]; 'replicate' as one concatenation of the edge samples,
    the same values ~8x faster than torch's replication_pad1d kernel (1.24 -> 0.16 ms for [1, 8, 111k], the
    encoder's first stage, one thread)."""
    if mode != "replicate" or torch.is_grad_enabled():  # training keeps torch's kernel and its backward
        return F.pad(x, (padding, padding), mode=mode)
    left, right = x[..., :1].expand(-1, -1, padding), x[..., -1:].expand(-1, -1, padding)
    return torch.cat([left, x, right], dim=-1)


def conv1d(
    x: torch.Tensor,
    conv: nn.Conv1d | nn.ConvTranspose1d,
    channels_last: bool,
    bias: bool = True,
    left_zeros: int = 0,
) -> torch.Tensor:
    """conv(x) for x [B, C_in, T] (conv's own padding mode), plain or as a channels-last 2-D conv over
    [B, C_in, 1, T] (see the module doc); [B, C_out, T'] either way. `bias=False` (transposed convs) leaves the
    bias out; `left_zeros` zero samples go before x (a causal conv's offline history).

    Channels-last pads the 4-D tensor itself (torch's padding kernels keep that layout), so in training every
    activation and gradient stays time-major: a pad of the 3-D view comes back in [B, C, T] order, and each such
    switch costs a copy forward and a mixed-layout elementwise op backward (leaky ReLU's backward ran 25x slower
    on mixed layouts than on matching ones)."""
    b = conv.bias if bias else None
    transposed = isinstance(conv, nn.ConvTranspose1d)
    if not channels_last and transposed:
        return F.conv_transpose1d(
            x, conv.weight, b, conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation
        )
    padding = conv.padding[0]
    pad_mode = conv.padding_mode if not transposed and conv.padding_mode != "zeros" and padding else None
    if not channels_last:
        if left_zeros:
            x = F.pad(x, (left_zeros, 0))
        if pad_mode is not None:
            x, padding = pad_edges(x, padding, pad_mode), 0
        return F.conv1d(x, conv.weight, b, conv.stride, padding, conv.dilation, conv.groups)
    x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, C_in, 1, T) stored (B, 1, T, C_in)
    if left_zeros:
        x4 = F.pad(x4, (left_zeros, 0, 0, 0))
    if pad_mode is not None:
        x4, padding = F.pad(x4, (padding, padding, 0, 0), mode=pad_mode), 0
    w4 = conv.weight.unsqueeze(2)  # (C_out, C_in / groups, 1, k), or (C_in, C_out / groups, 1, k) transposed
    stride, dilation = (1, conv.stride[0]), (1, conv.dilation[0])
    if transposed:
        y = F.conv_transpose2d(x4, w4, b, stride, (0, padding), (0, conv.output_padding[0]), conv.groups, dilation)
    else:
        y = F.conv2d(x4, w4, b, stride, (0, padding), dilation, conv.groups)
    return y.squeeze(2)  # (B, C_out, T') stored time-major


class ConvLayer(nn.Module):
    """Base of the conv layers here: holds the torch conv as `.conv` and the channels-last switch."""

    channels_last: bool = False

    def run_conv(self, x: torch.Tensor, bias: bool = True, left_zeros: int = 0) -> torch.Tensor:
        return conv1d(x, self.conv, self.channels_last, bias, left_zeros)


class Conv1dNorm(ConvLayer):
    """Non-causal conv with symmetric padding ('same' length at stride 1), padded by `pad_mode`.

    Args:
        padding: None = 'same' padding (k - 1) * d / 2; strided downsampling convs pass their own.
        pad_mode: torch padding mode: zeros, reflect, replicate or circular.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        padding: int | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode {pad_mode!r} is not one of {PAD_MODES}")
        if padding is None:
            padding = get_padding(kernel_size, dilation)
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, dilation, padding_mode=pad_mode)
        self.conv = weight_norm(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_conv(x)


@dataclass
class ConvState:
    """Input samples a causal conv has seen but not yet used up: [B, C_in, (k - 1) * d + 1 - stride]."""

    history: torch.Tensor


class CausalConv1dNorm(StreamingModule[ConvState], ConvLayer):
    """Causal conv: output t sees inputs <= t only. Streams by keeping its last input samples as state.

    Offline, the history starts as zeros, which is exactly NeMo's left zero padding of
    `padding_total = (k - 1) * d + 1 - stride` samples (NeMo's `pad_mode` never reaches those samples: its
    causal pad is always constant zeros, and so is ours):

        k = 3, d = 2, stride 1: history of (3 - 1) * 2 = 4 samples
        input            h h h h | x0 x1 x2 x3 ...
        y0 = w . (h-4, h-2, x0)  ^-----^-----^
        y1 = w . (h-3, h-1, x1)     ^-----^-----^
        after the chunk, the last 4 samples of [history | chunk] become the new history.

    With stride s the layer emits floor((P + T - k_eff) / s) + 1 outputs and keeps what is left
    (P = k_eff - s samples in steady state), so chunks that are multiples of s stream exactly; an offline
    input whose length is a multiple of s gives T / s outputs (the codec always pads to whole frames).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = weight_norm(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding=0, dilation=dilation, groups=groups)
        )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        self.padding_total = self.effective_kernel - stride
        if self.padding_total < 0:
            raise ValueError(f"CausalConv1dNorm: stride {stride} larger than the effective kernel")
        self.gemm_cache = DerivedWeight()  # gemm_weight(weight), remade when the weight changes
        self.columns_cache = DerivedWeight()  # the weight as [C_out, C_in * k]

    def init_state(self, batch_size: int) -> ConvState:
        like = self._param_like()
        return ConvState(like.new_zeros(batch_size, self.in_channels, self.padding_total))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_streaming:  # offline the history is P zeros: the conv pads them, and there is no state
            num_out = max(0, (self.padding_total + x.shape[-1] - self.effective_kernel) // self.stride + 1)
            if num_out == 0:
                return x.new_zeros(x.shape[0], self.out_channels, 0)
            return self._conv(x, num_out, left_zeros=self.padding_total)
        state = self.get_state(x.shape[0])
        x = torch.cat([state.history, x], dim=-1)  # (B, C_in, P + T)
        num_out = max(0, (x.shape[-1] - self.effective_kernel) // self.stride + 1)
        if num_out == 0:  # a streaming chunk too short for one output yet
            self.set_state(ConvState(x))
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        y = self._conv(x, num_out)  # (B, C_out, num_out)
        # a copy, not a view: a view would keep the whole input chunk alive in the state (GBs for long chunks)
        self.set_state(ConvState(x[..., num_out * self.stride :].clone()))
        return y

    def _conv(self, x: torch.Tensor, num_out: int, left_zeros: int = 0) -> torch.Tensor:
        """The first num_out outputs of the unpadded conv of [left_zeros zeros | x [B, C_in, L]] (samples past
        the last full window go unused): one matmul for short inputs without autograd, else torch's conv."""
        conv = self.conv
        layout = None
        if not torch.is_grad_enabled() and conv.groups == 1 and x.device.type == "cpu":
            layout = gemm_layout(x.shape[0], num_out, self.out_channels)
        if layout is None:
            return self.run_conv(x, left_zeros=left_zeros)
        if left_zeros:
            x = F.pad(x, (left_zeros, 0))
        x = x[..., : (num_out - 1) * self.stride + self.effective_kernel]
        # the layouts are rebuilt when the stored weight changes (in place: _version; replaced, moved, cast:
        # data_ptr); with weight norm the stored tensors are its parametrization's (conv.weight is new on every access)
        stored = list(conv.parametrizations.weight.parameters()) if parametrize.is_parametrized(conv) else [conv.weight]
        key, k, dilation = version_key(*stored), conv.kernel_size[0], conv.dilation[0]
        if layout == "columns":
            weight_2d = self.columns_cache.get(key, lambda: conv.weight.reshape(self.out_channels, -1).contiguous())
            return columns_conv1d(x, weight_2d, conv.bias, k, self.stride, dilation)
        weight_t = self.gemm_cache.get(key, lambda: gemm_weight(conv.weight))
        return gemm_conv1d(x, weight_t, conv.bias, k, self.stride, dilation)


@dataclass
class TransposeState:
    """Overlap-add tail of a causal transposed conv, not yet emitted: [B, C_out, kernel - stride] (no bias)."""

    tail: torch.Tensor


class CausalConvTranspose1dNorm(StreamingModule[TransposeState], ConvLayer):
    """Causal upsampling: a transposed conv (kernel 2 x stride by default) whose overhang is trimmed on the right.

    Each input step t writes `kernel` output samples starting at t * stride; the first T * stride samples are
    emitted, the rest (kernel - stride samples) is the tail that the next input steps overlap-add onto:

        stride 2, kernel 4:   x0 -> a0 a1 a2 a3
                              x1 ->       b0 b1 b2 b3
        output (T = 2):       a0 a1 a2+b0 a3+b1 | b2 b3  <- tail: added to the next chunk's first 2 samples
                                                           (offline, NeMo trims it away: same samples)

    `groups` = C_out (NeMo's `n_groups_equal_to_out_channels`, from MiniCodec) makes each output channel
    mix 2 input channels; groups = 1 is a dense transposed conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"CausalConvTranspose1dNorm: kernel {kernel_size} shorter than stride {stride}")
        self.conv = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, groups=groups))
        self.out_channels, self.stride, self.groups = out_channels, stride, groups
        self.trim = kernel_size - stride  # NeMo's padding_right (trim_right_ratio = 1), padding_left = 0

    def init_state(self, batch_size: int) -> TransposeState:
        like = self._param_like()
        return TransposeState(like.new_zeros(batch_size, self.out_channels, self.trim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1] * self.stride
        if n == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        # (B, C_out, T * stride + trim), bias added only to emitted samples so the tail carries none
        y = self.run_conv(x, bias=False)
        if self.is_streaming:  # offline the tail is zeros and the overhang is dropped: nothing to add or keep
            state = self.get_state(x.shape[0])
            y = torch.cat([y[..., : self.trim] + state.tail, y[..., self.trim :]], dim=-1)
            self.set_state(TransposeState(y[..., n:].clone()))  # a copy: a view would keep all of y alive
        out = y[..., :n]
        if self.conv.bias is not None:
            out = out + self.conv.bias[None, :, None]
        return out


class ConvTranspose1dNorm(ConvLayer):
    """Non-causal upsampling transposed conv, overhang trimmed symmetrically: [B, C_in, T] -> [B, C_out, T * s]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        output_padding = (kernel_size - stride) % 2
        padding = (kernel_size - stride + 1) // 2
        conv = nn.ConvTranspose1d(
            in_channels, out_channels, kernel_size, stride, padding, output_padding=output_padding, groups=groups
        )
        self.conv = weight_norm(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_conv(x)
