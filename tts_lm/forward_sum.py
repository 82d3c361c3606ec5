"""Forward-sum (CTC) alignment loss on attention log-probabilities (RAD-TTS, Badlani et al. 2022; Koel-TTS).

The alignment heads give, for every audio position, a distribution over the text positions. The loss is the
negative log of the total probability of all monotonic alignments that visit every text position in order,
summed by the CTC forward algorithm: the text positions 1..P are the CTC targets, the audio positions are the
CTC time steps, and a blank class with a fixed log-probability (`blank_logprob`, -1 as RAD-TTS) lets an audio
position belong to no text token. As RAD-TTS, the per-item loss is divided by the text length and averaged
over the batch.

    forward_sum_loss(attn_logprob [B, Q, P], text_lens [B], audio_lens [B], audio_repeat=1) -> scalar

Low frame rates: CTC needs at least one time step per text position, but at 12.5 frames/s espeak-ng IPA runs
at ~1.5 symbols per frame (stress marks and spaces are symbols too). `audio_repeat = r` repeats every audio
position r times before the CTC, so one audio frame may cover up to r consecutive text positions (with the
same attention distribution for its r sub-steps); r = 1 is plain RAD-TTS.

`attn_logprob[b, q, p]` is a log-probability (or any score; it is re-normalised with the blank) of audio
position q attending to text position p. Positions past `audio_lens[b]` / `text_lens[b]` are ignored. An item
with fewer audio than text positions has no valid alignment; its loss is 0 (CTC `zero_infinity`).

Plain function on tensors; nothing else of the project is imported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def forward_sum_loss(
    attn_logprob: torch.Tensor,
    text_lens: torch.Tensor,
    audio_lens: torch.Tensor,
    blank_logprob: float = -1.0,
    audio_repeat: int = 1,
) -> torch.Tensor:
    """CTC forward-sum alignment loss, masked by lengths. Returns a scalar (mean over items of loss / text_len).

    Args:
        attn_logprob: float [B, Q, P], audio positions over text positions.
        text_lens: long [B], valid text positions per item (1..P).
        audio_lens: long [B], valid audio positions per item (1..Q).
        blank_logprob: the score of the CTC blank before re-normalisation.
        audio_repeat: CTC time steps per audio position (>= 1), see the module doc.
    """
    if attn_logprob.dim() != 3:
        raise ValueError(f"forward_sum_loss: attn_logprob must be [B, Q, P], got {tuple(attn_logprob.shape)}")
    batch, num_audio, num_text = attn_logprob.shape
    if text_lens.shape != (batch,) or audio_lens.shape != (batch,):
        raise ValueError(
            f"forward_sum_loss: text_lens {tuple(text_lens.shape)} and audio_lens "
            f"{tuple(audio_lens.shape)} must be [{batch}]"
        )
    if int(text_lens.min()) < 1 or int(audio_lens.min()) < 1:
        raise ValueError("forward_sum_loss: every item needs at least one text and one audio position")
    if int(text_lens.max()) > num_text or int(audio_lens.max()) > num_audio:
        raise ValueError(f"forward_sum_loss: lengths exceed the attention map {tuple(attn_logprob.shape)}")

    if audio_repeat < 1:
        raise ValueError(f"forward_sum_loss: audio_repeat={audio_repeat} must be >= 1")
    scores = attn_logprob.float()
    if audio_repeat > 1:
        scores = scores.repeat_interleave(audio_repeat, dim=1)  # (B, Q*r, P)
        audio_lens = audio_lens * audio_repeat
    text_valid = torch.arange(num_text, device=scores.device)[None, :] < text_lens[:, None]  # (B, P)
    scores = scores.masked_fill(~text_valid[:, None, :], -1e4)  # padded text can never be chosen
    scores = F.pad(scores, (1, 0), value=blank_logprob)  # (B, Q, 1 + P), class 0 = blank
    log_probs = scores.log_softmax(dim=-1).transpose(0, 1)  # (Q, B, 1 + P), CTC layout
    targets = torch.arange(1, num_text + 1, device=scores.device).expand(batch, num_text)  # (B, P)
    return F.ctc_loss(
        log_probs, targets, audio_lens.cpu(), text_lens.cpu(), blank=0, reduction="mean", zero_infinity=True
    )
