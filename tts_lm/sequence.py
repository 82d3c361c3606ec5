"""Laying out one decoder-only sequence per row: [speaker prompt] [text] [audio], plus frame stacking.

    row b:  p_0 .. p_{P-1} | BOS t_1 .. t_N EOS | A_BOS a_0 .. a_{Q-2}
            prompt steps     text positions       audio steps (inputs); outputs at audio steps predict a_0 ..

Training lays rows out right-padded (pads at the end, which a causal model never attends to, so no mask is
needed and SDPA's causal kernel is used); generation lays them out left-padded (all rows end at the same index,
so one step appends one position to every row) with a 2D attention mask and per-row positions that start at 0
at each row's first real token. Either way RoPE positions inside a row are 0, 1, 2, ... so a row computes the
same thing whatever its neighbours.

Frame stacking: S consecutive frames of K codebooks become one step of S*K streams, stream s*K + k = codebook k
of the step's s-th frame: codes [B, K, F] <-> [B, S*K, ceil(F / S)].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def stack_frames(codes: torch.Tensor, frames_per_step: int, pad: int) -> torch.Tensor:
    """codes [B, K, F] -> [B, S*K, ceil(F/S)], the last step padded with `pad`."""
    s = frames_per_step
    if s == 1:
        return codes
    batch, k, f = codes.shape
    steps = -(-f // s)
    codes = torch.nn.functional.pad(codes, (0, steps * s - f), value=pad)  # (B, K, steps*S)
    codes = codes.view(batch, k, steps, s).permute(0, 3, 1, 2)  # (B, S, K, steps)
    return codes.reshape(batch, s * k, steps)  # (B, S*K, steps)


def unstack_frames(codes: torch.Tensor, frames_per_step: int) -> torch.Tensor:
    """[B, S*K, steps] -> [B, K, steps*S] (inverse of `stack_frames`, padding kept)."""
    s = frames_per_step
    if s == 1:
        return codes
    batch, sk, steps = codes.shape
    codes = codes.view(batch, s, sk // s, steps).permute(0, 2, 3, 1)  # (B, K, steps, S)
    return codes.reshape(batch, sk // s, steps * s)


def text_with_specials(phoneme_ids: list[torch.Tensor], bos: int, eos: int, pad: int) -> torch.Tensor:
    """Rows of phoneme ids -> long [B, max N + 2]: BOS, ids, EOS, then `pad`."""
    width = max(len(ids) for ids in phoneme_ids) + 2
    out = torch.full((len(phoneme_ids), width), pad, dtype=torch.long)
    for b, ids in enumerate(phoneme_ids):
        out[b, 0], out[b, len(ids) + 1] = bos, eos
        out[b, 1 : len(ids) + 1] = ids
    return out


@dataclass
class Layout:
    """An assembled batch: embeddings and where each row's segments are (key indices).

    Attributes:
        embeds: float [B, L, D].
        attention_mask: long [B, L] (1 = real token) when left-padded, None when right-padded.
        position_ids: long [B, L], RoPE positions (0 at each row's first real token).
        text_start, text_len, audio_start, audio_len: long [B].
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor
    text_start: torch.Tensor
    text_len: torch.Tensor
    audio_start: torch.Tensor
    audio_len: torch.Tensor

    def audio_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions long [B, Q], valid bool [B, Q]) of every row's audio steps, Q = max audio_len."""
        j = torch.arange(int(self.audio_len.max()), device=self.embeds.device)
        positions = (self.audio_start[:, None] + j[None, :]).clamp(max=self.embeds.shape[1] - 1)
        return positions, j[None, :] < self.audio_len[:, None]


def assemble(
    segments: list[tuple[torch.Tensor, torch.Tensor]], left_pad: bool, text_segment: int = 1, audio_segment: int = 2
) -> Layout:
    """Concatenate per-row segments [(emb [B, S_i, D], lens [B]), ...] into one padded sequence per row."""
    batch, dim = segments[0][0].shape[0], segments[0][0].shape[2]
    lens = torch.stack([seg_lens for _, seg_lens in segments], dim=1).cpu()  # (B, num_segments)
    total = lens.sum(1)  # (B,)
    length = int(total.max())
    device = segments[0][0].device
    embeds = segments[0][0].new_zeros(batch, length, dim)  # (B, L, D)
    offset = (length - total) if left_pad else torch.zeros_like(total)
    for b in range(batch):
        row = torch.cat([emb[b, : int(seg_lens[b])] for emb, seg_lens in segments], dim=0)  # (total_b, D)
        embeds[b, int(offset[b]) : int(offset[b]) + row.shape[0]] = row
    starts = offset[:, None] + torch.cumsum(lens, dim=1) - lens  # (B, num_segments)
    positions = (torch.arange(length)[None, :] - offset[:, None]).clamp(min=0)  # (B, L)
    mask = (torch.arange(length)[None, :] >= offset[:, None]).long() if left_pad else None
    return Layout(
        embeds=embeds,
        attention_mask=None if mask is None else mask.to(device),
        position_ids=positions.to(device),
        text_start=starts[:, text_segment].to(device),
        text_len=lens[:, text_segment].to(device),
        audio_start=starts[:, audio_segment].to(device),
        audio_len=lens[:, audio_segment].to(device),
    )
