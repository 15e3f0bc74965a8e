"""WAV (RIFF/WAVE) headers for 16-bit PCM, as Pipecat's ``add_wav_header`` sends them.

With ``add_wav_header``, every audio message is a complete, self-contained WAV file: the
canonical 44-byte header (a ``RIFF`` chunk holding a 16-byte ``fmt `` chunk, format 1 = integer
PCM, 16 bits per sample, and one ``data`` chunk) followed by the interleaved little-endian
samples. A browser can hand each message to ``decodeAudioData`` as is.

Layout (all integers little-endian)::

    offset  size  field
         0     4  "RIFF"
         4     4  36 + data size        (the size of everything after this field)
         8     4  "WAVE"
        12     4  "fmt "
        16     4  16                    (size of the fmt chunk)
        20     2  1                     (WAVE_FORMAT_PCM)
        22     2  channels
        24     4  sample rate
        28     4  byte rate             (rate * channels * 2)
        32     2  block align           (channels * 2)
        34     2  16                    (bits per sample)
        36     4  "data"
        40     4  data size
        44        samples

Received audio. Pipecat's client sends every audio message with such a header by default
(``add_wav_header=True``). ``wav_samples`` finds the samples of a message that starts with a
RIFF/WAVE header (any chunk layout: it walks the chunks to ``data``), so that the header does
not reach the application as 44 bytes of noise.
"""

from __future__ import annotations

import struct

from wavewire.core.frames import PCM16_SAMPLE_WIDTH

__all__ = ["WAV_HEADER_SIZE", "wav_chunk", "wav_header", "wav_samples"]

#: Size in bytes of the header that ``wav_header`` writes.
WAV_HEADER_SIZE = 44

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_UINT16_MAX = 0xFFFF
_UINT32_MAX = 0xFFFF_FFFF


def wav_header(data_size: int, sample_rate: int, num_channels: int = 1) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV file whose samples take ``data_size`` bytes.

    ``ValueError`` if a value does not fit the format: a non-positive rate or channel count, more
    than 65,535 channels, a data size that is negative, not a whole number of sample frames, or
    too large for the 32-bit RIFF size fields.
    """
    if not 0 < num_channels <= _UINT16_MAX:
        raise ValueError(f"num_channels must be in 1..65535, got {num_channels}")
    block_align = num_channels * PCM16_SAMPLE_WIDTH
    if block_align > _UINT16_MAX:
        raise ValueError(f"{num_channels} channels of 16-bit PCM do not fit a WAV block align")
    byte_rate = sample_rate * block_align
    if sample_rate <= 0 or byte_rate > _UINT32_MAX:
        raise ValueError(f"sample_rate must be positive and fit a WAV header, got {sample_rate}")
    if data_size < 0 or data_size % block_align:
        raise ValueError(
            f"{data_size} bytes is not a whole number of {num_channels}-channel 16-bit frames"
        )
    if data_size > _UINT32_MAX - 36:
        raise ValueError(f"{data_size} bytes of samples do not fit a WAV file")
    return _HEADER.pack(
        b"RIFF",
        36 + data_size,
        b"WAVE",
        b"fmt ",
        16,
        1,
        num_channels,
        sample_rate,
        byte_rate,
        block_align,
        8 * PCM16_SAMPLE_WIDTH,
        b"data",
        data_size,
    )


def wav_chunk(pcm: bytes, sample_rate: int, num_channels: int = 1) -> bytes:
    """``pcm`` (16-bit little-endian, interleaved) as a complete WAV file: header + samples."""
    return wav_header(len(pcm), sample_rate, num_channels) + pcm


#: A data chunk size that writers of streamed WAV use for "unknown, until the end".
_STREAMED_SIZES = (0, _UINT32_MAX)


def wav_samples(data: bytes) -> bytes | None:
    """The samples of the WAV file at the start of ``data``: the body of its ``data`` chunk (the
    rest of ``data`` if the chunk's size is unknown or larger), or None if ``data`` does not start
    with a RIFF/WAVE header leading to a ``data`` chunk.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position = 12
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        body = position + 8
        if chunk_id == b"data":
            return data[body:] if size in _STREAMED_SIZES else data[body : body + size]
        position = body + size + (size & 1)  # RIFF chunks are padded to an even size
    return None
