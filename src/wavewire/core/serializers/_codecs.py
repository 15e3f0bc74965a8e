"""Audio conversions for the telephony serializers: G.711 and PCM16 codecs, streaming resampling.

The work is done by well-kept libraries, imported lazily so that ``import wavewire`` needs none
of them (install them with ``pip install "wavewire[telephony]"``):

- G.711 mu-law/A-law by ``audioop``: the standard library's up to Python 3.12, the
  ``audioop-lts`` package (same module name, same C code) from 3.13 on. The standard library's
  warns that it is deprecated when imported; that one warning is silenced at import.
- Resampling by ``soxr`` (libsoxr, on numpy), with a **streaming** resampler per direction
  (:class:`StreamResampler`, ``soxr.ResampleStream`` at quality ``"HQ"``), not a one-shot
  ``soxr.resample`` per message. A phone stream comes in 20 ms messages: resampling each alone
  filters it as if silence surrounded it, a transient at every edge, which measures about
  30 dB signal-to-noise against resampling the whole signal (a 50 Hz buzz), where the stream
  keeps the filter's history across messages and measures over 70 dB. The price is latency:
  libsoxr works in blocks, so output comes in bursts, and part of the input is held at any time
  (measured by ``bench/resampler_quality.py``, 20 ms pieces: 16 kHz <-> 8 kHz holds 62 ms at
  the median, up to 115 ms; 24 kHz <-> 8 kHz 43 ms, up to 73 ms). Output stays in order and
  continuous, and the serializers' ``flush()`` sends what is held at the end of an utterance;
  an application at the provider's rate (``sample_rate=8000`` for an 8 kHz provider)
  resamples nothing and adds no latency. ``HQ``, not Pipecat's ``VHQ``: both measure over
  130 dB SNR on speech-band tones, far beyond what G.711 keeps (about 37 dB), but ``VHQ``
  holds up to 152 ms at 24 kHz <-> 8 kHz (twice ``HQ``) and the same as ``HQ`` at 16 kHz
  (docs/telephony.md has the table). ``QQ`` and audioop's ``ratecv`` hold nothing but do not
  filter, so speech above 4 kHz aliases into the call (measured: 6 dB).

A missing library raises :class:`ImportError` naming the extra when a serializer is created,
not when the first message arrives (where the core would drop every message one by one).
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from typing import Any, Literal, Protocol, cast

from wavewire.core.frames import PCM16_SAMPLE_WIDTH
from wavewire.core.serializers.base import SerializationError

__all__ = [
    "INSTALL_HINT",
    "Encoding",
    "StreamResampler",
    "decode",
    "encode",
    "require_audioop",
    "require_soxr",
]

INSTALL_HINT = 'pip install "wavewire[telephony]"'

#: ``PCMU``: G.711 mu-law, ``PCMA``: G.711 A-law (one byte a sample); ``L16``: 16-bit
#: little-endian PCM (what the application's frames hold), passed through.
Encoding = Literal["PCMU", "PCMA", "L16"]
ENCODINGS: tuple[Encoding, ...] = ("PCMU", "PCMA", "L16")

#: soxr's quality: see the module docstring.
_QUALITY = "HQ"
#: Full scale of 16-bit PCM: samples go to soxr as floats in [-1, 1).
_SCALE = 32768.0


class _Audioop(Protocol):
    def lin2ulaw(self, fragment: bytes, width: int, /) -> bytes: ...
    def ulaw2lin(self, fragment: bytes, width: int, /) -> bytes: ...
    def lin2alaw(self, fragment: bytes, width: int, /) -> bytes: ...
    def alaw2lin(self, fragment: bytes, width: int, /) -> bytes: ...


def _missing(what: str) -> ImportError:
    return ImportError(f"{what} is needed by the telephony serializers: {INSTALL_HINT}")


@functools.cache
def require_audioop() -> _Audioop:
    """The ``audioop`` module (stdlib before 3.13, ``audioop-lts`` after), or ``ImportError``."""
    with warnings.catch_warnings():
        # Python 3.11 and 3.12 warn on import ("'audioop' is deprecated and slated for removal
        # in Python 3.13"); audioop-lts, its maintained continuation, does not.
        warnings.filterwarnings(
            "ignore", message=r".*'audioop' is deprecated", category=DeprecationWarning
        )
        try:
            module = importlib.import_module("audioop")
        except ImportError as exc:
            name = "audioop-lts" if sys.version_info >= (3, 13) else "audioop"
            raise _missing(name) from exc
    return cast(_Audioop, module)


@functools.cache
def require_soxr() -> tuple[Any, Any]:
    """The ``soxr`` and ``numpy`` modules, or ``ImportError`` naming the extra."""
    try:
        soxr = importlib.import_module("soxr")
        numpy = importlib.import_module("numpy")
    except ImportError as exc:
        raise _missing("soxr") from exc
    return soxr, numpy


def encode(encoding: Encoding, pcm: bytes) -> bytes:
    """PCM16 (little-endian, whole samples) to ``encoding``."""
    if encoding == "L16":
        return pcm
    audioop = require_audioop()
    if encoding == "PCMU":
        return audioop.lin2ulaw(pcm, PCM16_SAMPLE_WIDTH)
    return audioop.lin2alaw(pcm, PCM16_SAMPLE_WIDTH)


def decode(encoding: Encoding, data: bytes) -> bytes:
    """``encoding`` to PCM16; :class:`SerializationError` for a partial L16 sample."""
    if encoding == "L16":
        if len(data) % PCM16_SAMPLE_WIDTH:
            raise SerializationError(f"16-bit PCM audio of odd length {len(data)}")
        return data
    audioop = require_audioop()
    if encoding == "PCMU":
        return audioop.ulaw2lin(data, PCM16_SAMPLE_WIDTH)
    return audioop.alaw2lin(data, PCM16_SAMPLE_WIDTH)


class StreamResampler:
    """Mono PCM16 from ``in_rate`` to ``out_rate``, continuous across calls (see the module
    docstring); a pass-through, needing no soxr, when the rates are equal."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream: Any = None
        if in_rate != out_rate:
            soxr, _ = require_soxr()
            # float32, not int16: libsoxr dithers int16 output, which would make silence hiss
            # by a bit and a cleared stream differ from a new one. Rounding here is exact.
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="float32", quality=_QUALITY
            )

    def process(self, pcm: bytes) -> bytes:
        """Resample the next piece of the stream (whole samples); may return fewer samples
        than the rates' ratio, or none, while the resampler fills (it catches up later)."""
        if self._stream is None or not pcm:
            return pcm
        _, np = require_soxr()
        # Explicitly little-endian on the wire: portable to big-endian hosts.
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / _SCALE
        out = self._stream.resample_chunk(samples)
        # The filter can overshoot full scale: clip, as a 16-bit output must.
        out = np.clip(np.rint(out * _SCALE), -_SCALE, _SCALE - 1)
        return bytes(out.astype("<i2").tobytes())

    def flush(self) -> bytes:
        """The output still held in the filter (the end of a signal); then start afresh."""
        if self._stream is None:
            return b""
        _, np = require_soxr()
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        out = np.clip(np.rint(out * _SCALE), -_SCALE, _SCALE - 1)
        return bytes(out.astype("<i2").tobytes())

    def clear(self) -> None:
        """Forget the history and the held output: the next call starts a new signal."""
        if self._stream is not None:
            self._stream.clear()
