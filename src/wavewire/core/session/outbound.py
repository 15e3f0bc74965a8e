"""What one peer is sent: frames turned into messages, with audio paced in real time.

One ``Outbound`` per session (server) or connection (client). ``send(frame, now)`` returns the
messages to write at once; ``take_due(now)`` returns those whose time has come; ``finished``
tells the owner to close. How each frame kind is handled, with ``audio_out`` configured:

=====================================  =============================================================
frame                                  handling
=====================================  =============================================================
``OutputAudioRawFrame`` (any audio)    chunked and paced by ``AudioOutput``; mono audio at another
                                       rate is resampled (streaming soxr, the ``telephony`` extra;
                                       without it ``ValueError`` naming it), other mismatches are
                                       refused (``ValueError``): never sent at the wrong rate
``SerializedAudioFrame``               audio the application serialized itself: one chunk's slot
                                       in the same schedule, its ``data`` sent as is when due
``TTSStoppedFrame``                    end of an utterance: the held partial chunk is padded and
                                       queued, and after it the serializer's ``flush()`` if it has
                                       one (what its own resampler holds: a telephony serializer's)
``InterruptionFrame``                  every queued and held chunk dropped at once, then the
                                       serializer's interruption message sent (``AudioInterrupted``
                                       reports the milliseconds dropped)
(a paced chunk the serializer fails on) dropped, reported as ``AudioChunkDropped``: it is sent
                                       by a timer, with no caller to raise to
``EndFrame``                           as ``TTSStoppedFrame``, then queued audio drained at real
                                       time pace, then the end silence as paced chunks, then
                                       ``finished`` (close with 1000)
``CancelFrame``                        everything dropped, ``finished`` at once (close now)
``OutputTransportMessageUrgentFrame``  sent at once, ahead of queued audio
anything else the serializer sends     queued behind the audio written before it (order kept)
=====================================  =============================================================

Without ``audio_out`` there is no queue and no pacing: every frame the serializer sends, audio
included, goes out at once (the caller paces, or does not need to); ``TTSStoppedFrame`` and
``EndFrame`` send the serializer's ``flush()`` at once; ``EndFrame`` and ``CancelFrame`` finish
at once. Refusing audio when the application disabled audio output is
the transport's job (``audio_out_enabled``).
"""

from __future__ import annotations

from wavewire.core.config import AudioOutConfig
from wavewire.core.events import AudioChunkDropped, AudioInterrupted, ConnectionInfo
from wavewire.core.frames import (
    AudioRawFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageUrgentFrame,
    SerializedAudioFrame,
    TTSStoppedFrame,
)
from wavewire.core.serializers._codecs import StreamResampler
from wavewire.core.serializers.base import FrameSerializer

from .audio import AudioChunk, AudioOutput, AudioStats, EncodedChunk, OutputState

__all__ = ["Outbound"]

Wire = bytes | str


class _SerializerFlush:
    """Queued behind an utterance's last chunk: the serializer's ``flush()`` is sent there."""


_FLUSH = _SerializerFlush()


class Outbound:
    """See the module docstring."""

    def __init__(self, serializer: FrameSerializer, audio_out: AudioOutConfig | None) -> None:
        #: This session's serializer (``session_serializer``): inbound messages use it too.
        self.serializer = serializer
        self._config = audio_out
        self._audio: AudioOutput[Wire | _SerializerFlush] | None = None
        if audio_out is not None:
            self._audio = AudioOutput(
                sample_rate=audio_out.sample_rate,
                num_channels=audio_out.num_channels,
                chunks_10ms=audio_out.chunks_10ms,
                lead=audio_out.lead,
                end_silence_secs=audio_out.end_silence_secs,
                add_wav_header=audio_out.add_wav_header,
                max_queued_seconds=audio_out.max_queued_seconds,
            )
        self._finished = False
        self._cancelled = False
        # Streaming resamplers by input sample rate, for mono audio at another rate.
        self._resamplers: dict[int, StreamResampler] = {}
        # What happened since the owner last asked (take_events): interruptions (ms dropped) and
        # paced chunks the serializer failed on (its message).
        self._interrupted: list[float] = []
        self._send_errors: list[str] = []
        self._dropped_chunks = 0

    def send(self, frame: Frame, now: float) -> tuple[list[Wire], bool]:
        """Accept ``frame``: the messages to write now, and whether the serializer took it.

        ``ValueError`` for audio in another format than the output's;
        ``AudioBufferFull`` when ``max_queued_seconds`` of audio wait (retry once ``writable``).
        """
        audio = self._audio
        if isinstance(frame, AudioRawFrame) and audio is not None:
            audio.write_audio(self._at_output_rate(frame), now)
            return self.take_due(now), True
        if isinstance(frame, SerializedAudioFrame):
            if audio is None:
                return ([] if frame.data is None else [frame.data]), True
            audio.write_encoded(frame.data, now)
            return self.take_due(now), True
        if isinstance(frame, TTSStoppedFrame):
            if audio is None:
                return self._flush_serializer(), True
            self._flush_resamplers(now)
            audio.end_utterance(now)
            self._queue_serializer_flush(audio)
            return self.take_due(now), True
        if isinstance(frame, CancelFrame):
            if audio is not None:
                audio.cancel()
            self._finished = self._cancelled = True
            return [], True
        if isinstance(frame, EndFrame):
            if audio is None:
                self._finished = True
                return self._flush_serializer(), True
            self._flush_resamplers(now)
            audio.end_utterance(now)
            self._queue_serializer_flush(audio)
            audio.end(now)
            return self.take_due(now), True
        data = self.serializer.serialize(frame)
        if isinstance(frame, InterruptionFrame) and audio is not None:
            for resampler in self._resamplers.values():
                resampler.clear()  # no tail of the interrupted speech leaks into the next
            self._interrupted.append(audio.interrupt())
            # The interruption goes first: the client must stop playing before anything else.
            return [*([] if data is None else [data]), *self.take_due(now)], data is not None
        if data is None:
            return [], False
        if audio is None or isinstance(frame, OutputTransportMessageUrgentFrame):
            return [data], True
        audio.queue_message(data)
        return self.take_due(now), True

    def take_due(self, now: float) -> list[Wire]:
        """Messages whose time has come, in order (audio chunks serialized as audio frames)."""
        audio = self._audio
        assert audio is not None, "no deadline, so nothing is ever due, without audio_out"
        out: list[Wire] = []
        for item in audio.take_due(now):
            if isinstance(item, AudioChunk):
                chunk = OutputAudioRawFrame(
                    audio=item.data, sample_rate=audio.sample_rate, num_channels=audio.num_channels
                )
                try:
                    data = self.serializer.serialize(chunk)
                except Exception as exc:
                    # A timer sends this chunk: nobody called us to raise to. Drop it, report it.
                    self._send_errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if data is not None:  # a serializer without audio (text only) sends none
                    out.append(data)
            elif isinstance(item, EncodedChunk):
                if isinstance(item.item, bytes | str):  # None: the slot is kept, nothing sent
                    out.append(item.item)
            elif isinstance(item.item, _SerializerFlush):
                out += self._flush_serializer()
            else:
                out.append(item.item)
        return out

    @property
    def has_events(self) -> bool:
        """``take_events`` has something (checked first: most sends have nothing to report)."""
        return bool(self._interrupted or self._send_errors)

    def take_events(self, connection: ConnectionInfo) -> list[AudioInterrupted | AudioChunkDropped]:
        """Events for what happened since the last call, for the owner to emit."""
        events: list[AudioInterrupted | AudioChunkDropped] = [
            AudioInterrupted(connection=connection, dropped_ms=ms) for ms in self._interrupted
        ]
        for detail in self._send_errors:
            self._dropped_chunks += 1
            events.append(
                AudioChunkDropped(
                    connection=connection, detail=detail, dropped_total=self._dropped_chunks
                )
            )
        self._interrupted.clear()
        self._send_errors.clear()
        return events

    def next_deadline(self) -> float | None:
        return None if self._audio is None or self._finished else self._audio.next_deadline()

    @property
    def finished(self) -> bool:
        """``EndFrame`` drained, or ``CancelFrame``: the owner closes the connection."""
        return self._finished or (self._audio is not None and self._audio.finished)

    @property
    def stats(self) -> AudioStats | None:
        """The audio scheduler's counters, or None without ``audio_out``."""
        return None if self._audio is None else self._audio.stats

    @property
    def cancelled(self) -> bool:
        """Finished by ``CancelFrame``: unsent output is dropped, not flushed."""
        return self._cancelled

    @property
    def writable(self) -> bool:
        """Whether audio would be accepted now (False while the audio queue is full)."""
        return self._audio is None or self._audio.writable

    def _at_output_rate(self, frame: AudioRawFrame) -> bytes:
        """``frame``'s audio at the output's rate: resampled (mono, streaming soxr, one
        resampler per input rate) if needed; never sent at the wrong rate."""
        config = self._config
        assert config is not None
        if frame.num_channels != config.num_channels:
            raise ValueError(
                f"audio with {frame.num_channels} channel(s) cannot be sent on an output of"
                f" {config.num_channels}: mix it first"
            )
        if frame.sample_rate == config.sample_rate:
            return frame.audio
        if frame.num_channels != 1:
            raise ValueError(
                f"audio at {frame.sample_rate} Hz cannot be sent on a {config.sample_rate} Hz"
                " output: only mono audio is resampled; resample it first"
            )
        resampler = self._resamplers.get(frame.sample_rate)
        if resampler is None:
            try:
                resampler = StreamResampler(frame.sample_rate, config.sample_rate)
            except ImportError as exc:
                raise ValueError(
                    f"audio at {frame.sample_rate} Hz needs resampling to the output's"
                    f" {config.sample_rate} Hz: {exc}"
                ) from None
            self._resamplers[frame.sample_rate] = resampler
        if len(frame.audio) % 2:
            raise ValueError("audio must be a whole number of 16-bit samples")
        return resampler.process(frame.audio)

    def _queue_serializer_flush(self, audio: AudioOutput[Wire | _SerializerFlush]) -> None:
        if audio.state is OutputState.OPEN:  # after EndFrame, its own flush is queued already
            audio.queue_message(_FLUSH)

    def _flush_serializer(self) -> list[Wire]:
        """The serializer's held tail (its optional ``flush()``), as messages to send now."""
        flush = getattr(self.serializer, "flush", None)
        if flush is None:
            return []
        try:
            data = flush()
        except Exception as exc:
            # As for a paced chunk: no caller to raise to when a timer sends it.
            self._send_errors.append(f"{type(exc).__name__}: {exc}")
            return []
        return [] if data is None else [data]

    def _flush_resamplers(self, now: float) -> None:
        """The end of an utterance: what the resamplers still hold goes out too."""
        audio = self._audio
        assert audio is not None
        for resampler in self._resamplers.values():
            tail = resampler.flush()
            if tail:
                audio.write_audio(tail, now)
