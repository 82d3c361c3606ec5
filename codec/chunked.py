"""Long audio through the codec in bounded memory: encode and decode in chunks that give the offline result.

    codes = encode_in_chunks(codec, wav, chunk_frames)     # float [B, T] -> long [B, K, F], F = ceil(T / hop)
    audio = decode_in_chunks(codec, latents, chunk_frames) # float [B, D, F] -> [B, F * hop]

`NanoCodec.encode` / `decode` call these on their own when the input is longer than `chunk_frames` frames
(default `DEFAULT_CHUNK_SECONDS` of audio), so a two-hour recording just works; peak memory is then the
input and output arrays plus one chunk's activations, whatever the length.

Encoding: the encoder is non-causal, but its receptive field is finite (`HiFiGANEncoder.receptive_field`:
latent frame f depends on samples [f * hop - left, f * hop + right]). Each chunk of `chunk_frames` frames is
encoded with ceil(left / hop) frames of real audio before it and ceil(right / hop) after it, cut on frame
boundaries so the strided convs keep the offline grid; the context frames' latents are dropped:

    frames   | ctx | chunk 0 | ctx |
                   | ctx | chunk 1 | ctx |
                             | ctx | chunk 2 (to the end, zero-padded to a whole frame as offline) |

Every kept frame then sees exactly the samples it sees offline (the padding at a chunk's cut is never
reached), so the latents, and the FSQ codes, are the offline ones (up to float summation order; tests check
the codes are equal). A causal encoder inside `streaming()` is fed its chunks in order instead (its state
carries the left context).

Decoding: the decoder is causal and streams (`codec/streaming.py`), so long codes are decoded chunk after
chunk inside one `streaming()` block (or the caller's, which then continues) and written into one output
array. The non-causal decoder ablation cannot stream and decodes in one pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from codec.model import NanoCodec

DEFAULT_CHUNK_SECONDS = 30.0  # per utterance; a paper-scale codec holds ~1-2 GB of activations per chunk


def default_chunk_frames(codec: NanoCodec) -> int:
    """Frames in `DEFAULT_CHUNK_SECONDS` of audio at the codec's frame rate (375 at 12.5 FPS)."""
    return max(1, round(DEFAULT_CHUNK_SECONDS * codec.frame_rate))


def context_frames(codec: NanoCodec) -> tuple[int, int]:
    """Whole frames of audio each encoder chunk needs before and after it to give the offline latents."""
    left, right = codec.audio_encoder.receptive_field()
    hop = codec.samples_per_frame
    return -(-left // hop), -(-right // hop)


def encode_in_chunks(codec: NanoCodec, wav: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """Waveform float [B, T] (unpadded) -> codes long [B, K, F], chunk by chunk, equal to one offline pass."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    hop, num_samples = codec.samples_per_frame, wav.shape[-1]
    num_frames = codec.num_frames(num_samples)
    if codec.cfg.encoder.causal and codec.is_streaming:
        # a streaming causal encoder carries its left context as state: feed it the chunks in order
        pieces = [
            _encode_frames(codec, wav[:, a * hop : (a + chunk_frames) * hop])
            for a in range(0, num_frames, chunk_frames)
        ]
        return torch.cat(pieces, dim=-1)
    before, after = context_frames(codec)
    pieces = []
    for start in range(0, num_frames, chunk_frames):
        stop = min(start + chunk_frames, num_frames)
        first, last = max(0, start - before), min(num_frames, stop + after)  # chunk plus context, in frames
        codes = _encode_frames(codec, wav[:, first * hop : last * hop])  # (B, K, last - first)
        pieces.append(codes[..., start - first : stop - first])  # (B, K, stop - start)
    return torch.cat(pieces, dim=-1)  # (B, K, F)


def _encode_frames(codec: NanoCodec, wav: torch.Tensor) -> torch.Tensor:
    """One encoder pass: [B, T'] (zero-padded to whole frames here) -> codes [B, K, ceil(T' / hop)]."""
    latents = codec.audio_encoder(codec.pad_to_frames(wav))  # (B, D, F')
    return codec.vector_quantizer.encode(latents)  # (B, K, F')


def decode_in_chunks(codec: NanoCodec, latents: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """Decoder input [B, D, F] -> waveform [B, F * hop] through the streaming decoder, `chunk_frames` at a time.

    Inside the caller's `streaming()` block the chunks continue its state; otherwise one block is opened
    (from the zero state, so the result is the offline decode).
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    if not codec.is_streaming:
        with codec.streaming(batch_size=latents.shape[0]):
            return decode_in_chunks(codec, latents, chunk_frames)
    hop, num_frames = codec.samples_per_frame, latents.shape[-1]
    out = None
    for start in range(0, num_frames, chunk_frames):
        audio = codec.audio_decoder(latents[..., start : start + chunk_frames])  # (B, n * hop)
        if out is None:  # one array for the whole output, so peak memory is it plus one chunk
            out = audio.new_empty(audio.shape[0], num_frames * hop)
        out[:, start * hop : start * hop + audio.shape[-1]] = audio
    return out
