"""soxr "HQ" (wavewire's) against "VHQ" (Pipecat's): latency and quality at the telephony rates.

Each rate pair (8 kHz <-> 16 kHz, 8 kHz <-> 24 kHz) and quality is run the way a phone call runs
it: a ``soxr.ResampleStream`` (float32, mono) fed 20 ms pieces, as the serializers do.

* delay: an impulse in the stream; how long after the piece holding it went in the output
  peak came out (the filter's delay plus libsoxr's block holding), in ms, averaged over 25
  places of the impulse.
* held: after each piece, the output still owed (input so far times the ratio, minus output so
  far), in ms at the output rate: its median and maximum over 2 s. This is what an utterance
  would lose at its end without a flush.
* SNR: a sum of tones (300, 1000, 2200, 3300 Hz: speech's telephone band, below every Nyquist
  here) computed exactly at the output rate is the ideal resample; the streamed output (with
  its flushed tail) is compared with it over 2 s, ends excluded. Signal power over the power
  of the difference, in dB.
* stopband (downsampling only): a 5 kHz tone, above the 4 kHz Nyquist of 8 kHz: the output's
  RMS against the input's, in dB (lower is better: what aliases into the call).

G.711 itself adds quantization noise at roughly 35-40 dB SNR, so resampling well above that is
inaudible on a phone line.

    python bench/resampler_quality.py

Deterministic (no clock is read); the numbers do not depend on the machine's load.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np

# soxr ships no type information: reached as Any, as core/serializers/_codecs.py does.
soxr: Any = importlib.import_module("soxr")

PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000)]
QUALITIES = ["HQ", "VHQ"]
PIECE_SECONDS = 0.02
TONES = (300.0, 1000.0, 2200.0, 3300.0)
SECONDS = 2.0


def stream(in_rate: int, out_rate: int, quality: str) -> Any:
    return soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)


def tones(rate: int, n: int) -> Any:
    t = np.arange(n) / rate
    return np.sum([0.2 * np.sin(2 * math.pi * f * t) for f in TONES], axis=0).astype(np.float32)


def run_pieces(resampler: Any, signal: Any, in_rate: int, out_rate: int) -> tuple[Any, list[float]]:
    """Output of the stream fed ``signal`` in 20 ms pieces, and the ms still owed after each."""
    piece = int(in_rate * PIECE_SECONDS)
    outputs = []
    owed_ms = []
    produced = 0
    for start in range(0, len(signal), piece):
        out = resampler.resample_chunk(signal[start : start + piece])
        outputs.append(out)
        produced += len(out)
        expected = (start + piece) * out_rate / in_rate
        owed_ms.append((expected - produced) * 1000 / out_rate)
    outputs.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return np.concatenate(outputs), owed_ms


def delay_ms(in_rate: int, out_rate: int, quality: str) -> float:
    """Mean, over impulses at 25 places across a block's cycle, of the time from the piece
    holding the impulse going in to the piece that brings its peak out (20 ms resolution)."""
    piece = int(in_rate * PIECE_SECONDS)
    delays = []
    for k in range(25):
        at = in_rate // 2 + k * in_rate // 100 + piece // 2  # 10 ms apart, mid-piece
        signal = np.zeros(2 * in_rate, dtype=np.float32)
        signal[at] = 1.0
        resampler = stream(in_rate, out_rate, quality)
        for index, start in enumerate(range(0, len(signal), piece)):
            out = resampler.resample_chunk(signal[start : start + piece])
            if len(out) and np.max(np.abs(out)) > 0.1:
                delays.append((index * piece + piece - at) * 1000 / in_rate)
                break
    return float(np.mean(delays))


def snr_db(in_rate: int, out_rate: int, quality: str) -> tuple[float, list[float]]:
    n = int(in_rate * SECONDS)
    out, owed = run_pieces(stream(in_rate, out_rate, quality), tones(in_rate, n), in_rate, out_rate)
    ideal = tones(out_rate, len(out))
    edge = int(out_rate * 0.05)
    signal = ideal[edge:-edge]
    noise = out[edge:-edge] - signal
    return 10 * math.log10(float(np.mean(signal**2)) / float(np.mean(noise**2))), owed


def stopband_db(in_rate: int, out_rate: int, quality: str) -> float:
    n = int(in_rate * SECONDS)
    t = np.arange(n) / in_rate
    tone = (0.5 * np.sin(2 * math.pi * 5000 * t)).astype(np.float32)
    out, _ = run_pieces(stream(in_rate, out_rate, quality), tone, in_rate, out_rate)
    edge = int(out_rate * 0.1)
    rms_out = math.sqrt(float(np.mean(out[edge:-edge] ** 2)))
    rms_in = math.sqrt(float(np.mean(tone**2)))
    return 20 * math.log10(max(rms_out, 1e-12) / rms_in)


def main() -> None:
    print(f"soxr {soxr.__version__}, float32 mono, {PIECE_SECONDS * 1000:.0f} ms pieces")
    header = "rates (Hz)       quality  delay ms  held ms (median/max)  SNR dB  stopband dB"
    print(header)
    print("-" * len(header))
    for in_rate, out_rate in PAIRS:
        for quality in QUALITIES:
            snr, owed = snr_db(in_rate, out_rate, quality)
            stop = f"{stopband_db(in_rate, out_rate, quality):11.1f}" if out_rate < in_rate else "-"
            delay = delay_ms(in_rate, out_rate, quality)
            print(
                f"{in_rate:>5} -> {out_rate:<5}    {quality:<7}  {delay:8.1f}"
                f"  {float(np.median(owed)):8.1f} / {max(owed):6.1f}       {snr:6.1f}  {stop:>11}"
            )


if __name__ == "__main__":
    main()
