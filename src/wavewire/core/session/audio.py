"""Output audio: chunking and real-time pacing of one session's outgoing audio, sans-IO.

Theory of operation
-------------------
An ``AudioOutput`` sits between the application's audio (``write_audio``, any length) and the
wire (one WebSocket message per chunk). It cuts the audio into chunks of a fixed size,
``chunk_bytes``, and tells its owner when each one is due. It never reads a clock: each input and
``take_due`` takes ``now``, in seconds on the caller's monotonic clock. ``next_deadline()`` says
when ``take_due`` will next have something. The owner arms a timer for that time and calls
``take_due(now)`` when it fires. Apart from ``now``, nothing is read from outside. The same calls
always give the same output, so a synthetic clock tests everything.

Chunks. One chunk holds ``chunk_frames = sample_rate // 100 * chunks_10ms`` sample frames (one
16-bit sample per channel each). So ``chunk_bytes = chunk_frames * num_channels * 2``, which is
Pipecat's ``audio_out_10ms_chunks`` formula. Only whole chunks are queued. The rest of a write
is *held* until more audio arrives, or until ``end_utterance``/``end`` pads it to a whole chunk
with silence (zero samples). Its playing time, ``chunk_duration = chunk_frames / sample_rate``,
depends on the frame count alone. A stereo chunk holds twice the bytes of a mono one and plays
just as long. Pipecat derives the interval from bytes and so paces stereo at half speed.

The schedule. Audio plays in *streams*. A stream starts when a chunk is queued while nothing is
playing, at ``t0 = now``. Chunk ``k`` of the stream (``k = 0, 1, ...``) is due at::

    due(k) = t0 + (k * chunk_frames - lead_frames) / sample_rate

``lead_frames`` is ``lead`` rounded to whole frames. It is computed from integers: one division
and one addition per chunk, never a running sum. So the rate is exact over a stream of any
length, with no drift and no rebasing while the producer keeps the queue fed. Pipecat's pacing
clock rebases to "now + interval" whenever it falls behind, and so it drifts. The send time of
the chunk is also its playing time, shifted earlier by ``lead``. The first chunks of a stream
go out at once, ``max_burst = 1 + lead_frames // chunk_frames`` of them, which fills the
client's buffer to about ``lead``. After that, one chunk goes out every ``chunk_duration``.

What can go wrong, and what happens:

- *Producer underrun*: the queue runs dry. The stream continues if the next audio arrives before
  the client has played everything sent (``now <= t0 + k * chunk_duration``, with ``k`` chunks
  sent): chunk ``k`` keeps its place, so back-to-back sentences play seamlessly. Audio that comes
  later starts a new stream at its ``now``. If an utterance was in progress (audio was written
  and ``end_utterance`` not called since), the client heard a gap, and ``stats.underruns``
  counts it. With ``lead = 0`` the test is the same as "after the next chunk's scheduled time".
  With a lead, a restart inside the lead window would send a second lead on top of the first.
- *Sender stall*: ``take_due`` is called late, for example because the event loop was blocked.
  One call sends at most ``max_burst`` chunks: the one due plus ``lead`` worth of catch-up,
  which is what the client's buffer can absorb. If more are due, the stream is re-anchored so
  that the next chunk is due ``chunk_duration`` after ``now``. ``stats.stalls`` counts these
  shifts, and ``stats.late_seconds`` adds up how far the schedule moved. Bursts stay bounded.
  The average rate is exact between stalls.

Messages. ``queue_message(item)`` queues an opaque item, such as a transport message, behind
all the audio written before it. It is due once everything ahead of it has been sent, and it
takes no playing time. ``take_due`` returns it in order, wrapped in ``Message``. If a partial
chunk is held when the message is queued, the message follows the chunk that this audio will
end up in. So it waits for the next write that completes that chunk, or for the
``end_utterance``, ``end`` or ``interrupt`` that flushes it. Urgent messages bypass this
object altogether: the owner sends them at once.

Encoded chunks. ``write_encoded(item, now)`` queues one chunk's playing time of audio that the
owner has already encoded (a serializer the core cannot call, such as Pipecat's async ones): it
is scheduled, counted, interrupted and backpressured exactly like a chunk of ``write_audio``, and
``take_due`` returns it as an ``EncodedChunk`` (no WAV header added: the owner encoded it). It
may not follow a held partial chunk (``ValueError``): that audio's place would be lost.

Interruption. ``interrupt()`` drops the held partial chunk and every queued chunk, including
end silence, and returns the milliseconds of audio dropped. Messages queued behind the audio are
kept. Nothing is ahead of them any more, so they are due at once, in their order. They are
usually state the client must still learn, such as "bot stopped speaking". The next audio starts
a new stream, and this restart is not an underrun. The owner then sends the interruption itself
(for example ``InterruptionFrame``) so that the client drops what it has buffered. Pipecat
users report that interruptions did not reach their browser clients (#456, #640, #2460).

End. ``end(now)`` is the graceful end (``EndFrame``). It pads and queues the held partial chunk,
then queues ``end_silence_secs`` of silence as ordinary paced chunks, rounded up to whole
chunks. Pipecat sends this silence as one large message. Once the last queued item has left
through ``take_due``, ``finished`` is true and the owner closes the connection.
``cancel()`` (``CancelFrame``) drops everything, messages included, and finishes at once.

States and the only transitions between them (``TRANSITIONS``)::

    OPEN --end--> ENDING --drained--> FINISHED
      |             |                    ^
      +---cancel----+-------cancel-------+

In OPEN, audio and messages are accepted. In ENDING, the queue drains and writes raise
``InvalidState``. FINISHED holds nothing and ``next_deadline()`` is None. ``end`` and ``cancel``
are idempotent. An ``interrupt`` in ENDING drops the rest of the audio, and the output finishes
once the messages are out.

Backpressure. The queue is bounded by ``max_queued_seconds`` of audio (queued chunks plus the
held partial). ``write_audio`` raises ``AudioBufferFull`` and queues nothing when the output
already holds that much. The check is made before the write, so one write may go past the
limit, and a write that is larger than the limit is never refused forever. ``writable`` tells
the adapter whether a write will be accepted. Space opens up when ``take_due`` sends a chunk,
or on ``interrupt``/``cancel``. So the adapter waits for its next timer and checks again. End
silence is not counted against the limit. Memory is bounded by ``max_queued_seconds``, plus one
write, plus the end silence. Messages are not counted: their rate is the application's.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeAlias, TypeVar

from wavewire.core._fastinit import fast_init
from wavewire.core.errors import InvalidState, WavewireError
from wavewire.core.frames import PCM16_SAMPLE_WIDTH

from .wav import wav_chunk, wav_header

__all__ = [
    "TRANSITIONS",
    "AudioBufferFull",
    "AudioChunk",
    "AudioOutput",
    "AudioStats",
    "EncodedChunk",
    "Message",
    "OutputItem",
    "OutputState",
    "OutputTrigger",
    "wav_chunk",
]

M = TypeVar("M")


class OutputState(enum.Enum):
    OPEN = "open"
    ENDING = "ending"
    FINISHED = "finished"


class OutputTrigger(enum.Enum):
    END = "end"
    DRAINED = "drained"
    CANCEL = "cancel"


#: Every legal (state, trigger) pair; a missing pair is a bug here, not in the caller.
TRANSITIONS: dict[tuple[OutputState, OutputTrigger], OutputState] = {
    (OutputState.OPEN, OutputTrigger.END): OutputState.ENDING,
    (OutputState.OPEN, OutputTrigger.CANCEL): OutputState.FINISHED,
    (OutputState.ENDING, OutputTrigger.DRAINED): OutputState.FINISHED,
    (OutputState.ENDING, OutputTrigger.CANCEL): OutputState.FINISHED,
}


class AudioBufferFull(WavewireError):
    """``write_audio`` refused: ``max_queued_seconds`` of audio are already queued.

    Nothing was queued. Wait until ``AudioOutput.writable`` (after the next ``take_due`` that
    sends a chunk), then write the same audio again.
    """


@fast_init
@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One audio message: ``chunk_bytes`` of PCM, or a WAV header followed by them.

    ``due`` is the chunk's scheduled send time. It may be earlier than the ``now`` it was taken
    at, by the caller's lateness.
    """

    data: bytes
    due: float

    def __repr__(self) -> str:
        return f"AudioChunk({len(self.data)} bytes, due={self.due!r})"


@fast_init
@dataclass(frozen=True, slots=True)
class Message(Generic[M]):
    """An item given to ``queue_message``, returned in its place among the chunks."""

    item: M


@fast_init
@dataclass(frozen=True, slots=True)
class EncodedChunk(Generic[M]):
    """An item given to ``write_encoded``: one chunk of audio its owner already encoded,
    returned by ``take_due`` at that chunk's slot (``None``: nothing to send, the slot is kept)."""

    item: M | None


OutputItem: TypeAlias = AudioChunk | Message[M] | EncodedChunk[M]


@fast_init
@dataclass(frozen=True, slots=True)
class AudioStats:
    """A snapshot of one output's counters (``AudioOutput.stats``)."""

    #: Audio chunks returned by ``take_due`` (end silence included).
    chunks_sent: int
    #: PCM bytes in those chunks (WAV headers not counted).
    bytes_sent: int
    #: Messages returned by ``take_due``.
    messages_sent: int
    #: Streams restarted because the producer ran dry in the middle of an utterance.
    underruns: int
    #: Times ``take_due`` was so late that the schedule had to move (see the module docstring).
    stalls: int
    #: Total seconds the schedule moved because of stalls.
    late_seconds: float
    #: Milliseconds of audio dropped by ``interrupt`` and ``cancel``, in total.
    dropped_ms_total: float
    #: Seconds of audio queued or held, not yet sent.
    queued_seconds: float


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _check_seconds(name: str, value: float, *, zero_ok: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = "non-negative" if zero_ok else "positive"
        raise ValueError(f"{name} must be a finite, {bound} number of seconds, got {value}")


class AudioOutput(Generic[M]):
    """One session's output audio scheduler; see the module docstring.

    ``M`` is the type of the items given to ``queue_message``: for a server, frames.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        num_channels: int = 1,
        chunks_10ms: int = 4,
        lead: float = 0.0,
        end_silence_secs: float = 2.0,
        add_wav_header: bool = False,
        max_queued_seconds: float = 30.0,
    ) -> None:
        _check_int("sample_rate", sample_rate, 100)  # below 100 Hz, 10 ms holds no frame
        _check_int("num_channels", num_channels, 1)
        _check_int("chunks_10ms", chunks_10ms, 1)
        _check_seconds("lead", lead, zero_ok=True)
        _check_seconds("end_silence_secs", end_silence_secs, zero_ok=True)
        _check_seconds("max_queued_seconds", max_queued_seconds, zero_ok=False)
        if not isinstance(add_wav_header, bool):
            raise TypeError(f"add_wav_header must be a bool, got {type(add_wav_header).__name__}")
        self.sample_rate = sample_rate
        self.num_channels = num_channels
        #: Bytes per sample frame.
        self.frame_bytes = num_channels * PCM16_SAMPLE_WIDTH
        #: Sample frames per chunk.
        self.chunk_frames = sample_rate // 100 * chunks_10ms
        #: Bytes of PCM per chunk (WAV header not included).
        self.chunk_bytes = self.chunk_frames * self.frame_bytes
        #: Seconds one chunk plays, for any channel count.
        self.chunk_duration = self.chunk_frames / sample_rate
        # Fraction(float) is the float's exact value: lead and limits in whole frames, no rounding
        # surprises such as 0.12 * 25 == 2.9999999999999996.
        self._lead_frames = round(Fraction(lead) * sample_rate)
        #: Seconds of lead, as used (rounded to whole frames).
        self.lead = self._lead_frames / sample_rate
        #: Most chunks one ``take_due`` returns: the one due plus ``lead`` worth of catch-up.
        self.max_burst = 1 + self._lead_frames // self.chunk_frames
        silence_frames = round(Fraction(end_silence_secs) * sample_rate)
        self._silence_chunks = -(-silence_frames // self.chunk_frames)  # rounded up
        # At least one frame, so that an empty output always accepts a write.
        self._max_frames = max(1, round(Fraction(max_queued_seconds) * sample_rate))
        self._wav = (
            wav_header(self.chunk_bytes, sample_rate, num_channels) if add_wav_header else b""
        )

        self.state = OutputState.OPEN
        self._queue: deque[bytes | Message[M] | EncodedChunk[M]] = deque()
        self._queued_chunks = 0
        self._held = b""
        # Messages queued while a partial chunk was held: they follow the chunk it will become.
        self._held_messages: list[Message[M]] = []
        self._utterance = False  # audio written, no end_utterance since
        # The stream: chunk k is due at base + (k * chunk_frames + offset) / sample_rate. No
        # stream (idle since construction or an interruption): base is None.
        self._base: float | None = None
        self._offset = 0
        self._k = 0
        self._last_now = -math.inf
        self._chunks_sent = 0
        self._messages_sent = 0
        self._underruns = 0
        self._stalls = 0
        self._late_seconds = 0.0
        self._dropped_frames = 0

    # --- inputs ------------------------------------------------------------------------------

    def write_audio(self, audio: bytes, now: float) -> None:
        """Append 16-bit little-endian PCM (interleaved if more than one channel).

        ``ValueError`` if ``audio`` is not a whole number of sample frames (nothing is queued;
        the caller decides whether to drop or log it). ``AudioBufferFull`` if
        ``max_queued_seconds`` of audio are already queued. ``InvalidState`` after ``end`` or
        ``cancel``.
        """
        self._check_open("write audio")
        if len(audio) % self.frame_bytes:
            raise ValueError(
                f"write_audio got {len(audio)} bytes, which is not a whole number of sample "
                f"frames ({self.frame_bytes} bytes each: {self.num_channels} channel(s) of "
                "16-bit PCM)"
            )
        self._last_now = now
        if not audio:
            return
        self._check_room()
        data = self._held + audio if self._held else bytes(audio)
        size = self.chunk_bytes
        whole = len(data) - len(data) % size
        if whole:
            self._start_if_idle(now)
            self._queue.append(data[:size])
            if self._held_messages:
                self._release_held_messages()
            if whole > size:  # more than one chunk (a 20 ms frame completes at most one)
                self._queue.extend(data[i : i + size] for i in range(size, whole, size))
            self._queued_chunks += whole // size
        self._held = data[whole:]
        self._utterance = True

    def write_encoded(self, item: M | None, now: float) -> None:
        """Queue one chunk of audio already encoded by the owner (see the module docstring).

        ``ValueError`` while a partial chunk of ``write_audio`` is held (end the utterance
        first); ``AudioBufferFull`` and ``InvalidState`` as ``write_audio``.
        """
        self._check_open("write audio")
        if self._held:
            raise ValueError(
                "write_encoded after a partial chunk of write_audio: end the utterance first"
            )
        self._last_now = now
        self._check_room()
        self._enqueue_chunks(EncodedChunk(item), 1, now)
        self._utterance = True

    def end_utterance(self, now: float) -> None:
        """The producer finished an utterance (Pipecat's ``TTSStoppedFrame``).

        A held partial chunk is padded with silence and queued. The next audio that comes after
        the client has played this one out starts a new stream, and that is not an underrun.
        """
        self._last_now = now
        if self._held:
            self._enqueue_chunks(self._held + bytes(self.chunk_bytes - len(self._held)), 1, now)
            self._held = b""
            self._release_held_messages()
        self._utterance = False

    def queue_message(self, item: M) -> None:
        """Queue ``item`` behind everything queued so far; ``take_due`` returns it as a Message.

        ``InvalidState`` after ``end`` or ``cancel``.
        """
        self._check_open("queue a message")
        if self._held:
            self._held_messages.append(Message(item))
        else:
            self._queue.append(Message(item))

    def interrupt(self) -> float:
        """Drop all queued and held audio; return how many milliseconds were dropped (a float).

        Queued messages are kept and become due at once. The next audio starts a new stream.
        """
        self._queue = deque(entry for entry in self._queue if isinstance(entry, Message))
        self._release_held_messages()
        dropped = self._drop_audio()
        self._check_drained()
        return dropped

    def end(self, now: float) -> None:
        """Graceful end: flush the held audio, add ``end_silence_secs`` of silence, then finish.

        Idempotent. ``finished`` turns true in the ``take_due`` that returns the last item, or
        here if nothing is queued.
        """
        if self.state is not OutputState.OPEN:
            return
        self.end_utterance(now)
        if self._silence_chunks:
            self._enqueue_chunks(bytes(self.chunk_bytes), self._silence_chunks, now)
        self._transition(OutputTrigger.END)
        self._check_drained()

    def cancel(self) -> float:
        """Drop everything, messages included, and finish at once.

        Returns the milliseconds of audio dropped. Idempotent.
        """
        dropped = self._drop_audio()
        self._queue.clear()
        self._held_messages.clear()
        if self.state is not OutputState.FINISHED:
            self._transition(OutputTrigger.CANCEL)
        return dropped

    # --- outputs -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``take_due`` will next return something, or None if nothing is queued.

        A message with nothing ahead of it is due at once. For it, the last ``now`` this object
        was given is returned (``-inf`` before any), which is a time already past.
        """
        if not self._queue:
            return None
        if isinstance(self._queue[0], Message):
            return self._last_now
        return self._due()

    def take_due(self, now: float) -> list[OutputItem[M]]:
        """Remove and return, in order, every item due at ``now``: at most ``max_burst`` chunks.

        Messages come with the chunks around them. They do not count towards the burst.
        """
        self._last_now = now
        queue = self._queue
        if not queue:  # half of the writes of 20 ms frames into 40 ms chunks queue nothing
            return []
        out: list[OutputItem[M]] = []
        burst = 0
        while queue:
            head = queue[0]
            if isinstance(head, Message):
                queue.popleft()
                out.append(head)
                self._messages_sent += 1
                continue
            due = self._due()
            if due > now:
                break
            if burst == self.max_burst:
                # Too late to catch up within the lead: move the schedule, not the burst size.
                self._base, self._offset, self._k = now, self.chunk_frames, 0
                self._late_seconds += self._due() - due
                self._stalls += 1
                break
            queue.popleft()
            self._k += 1
            burst += 1
            if isinstance(head, EncodedChunk):
                out.append(head)
            else:
                out.append(AudioChunk(self._wav + head if self._wav else head, due))
        self._queued_chunks -= burst
        self._chunks_sent += burst
        self._check_drained()
        return out

    @property
    def finished(self) -> bool:
        """True once ``end`` has drained or ``cancel`` was called: the owner may close."""
        return self.state is OutputState.FINISHED

    @property
    def writable(self) -> bool:
        """True if ``write_audio`` would accept audio now."""
        return self.state is OutputState.OPEN and self._queued_frames() < self._max_frames

    @property
    def stats(self) -> AudioStats:
        return AudioStats(
            chunks_sent=self._chunks_sent,
            bytes_sent=self._chunks_sent * self.chunk_bytes,
            messages_sent=self._messages_sent,
            underruns=self._underruns,
            stalls=self._stalls,
            late_seconds=self._late_seconds,
            dropped_ms_total=self._dropped_frames * 1000 / self.sample_rate,
            queued_seconds=self._queued_frames() / self.sample_rate,
        )

    # --- internals ---------------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self.state is not OutputState.OPEN:
            raise InvalidState(f"cannot {what}: the audio output is {self.state.value}")

    def _transition(self, trigger: OutputTrigger) -> None:
        next_state = TRANSITIONS.get((self.state, trigger))
        if next_state is None:
            raise AssertionError(f"no transition from {self.state} on {trigger}")
        self.state = next_state

    def _check_room(self) -> None:
        if self._queued_frames() >= self._max_frames:
            raise AudioBufferFull(
                f"{self._queued_frames() / self.sample_rate:.3f} s of output audio already "
                f"queued (max_queued_seconds allows {self._max_frames / self.sample_rate:.3f} s)"
            )

    def _check_drained(self) -> None:
        if self.state is OutputState.ENDING and not self._queue:
            self._transition(OutputTrigger.DRAINED)

    def _queued_frames(self) -> int:
        return self._queued_chunks * self.chunk_frames + len(self._held) // self.frame_bytes

    def _due(self) -> float:
        assert self._base is not None
        return self._base + (self._k * self.chunk_frames + self._offset) / self.sample_rate

    def _start_if_idle(self, now: float) -> None:
        """Before queueing chunks: start a stream unless one is playing (see the docstring)."""
        if self._queued_chunks:
            return
        if self._base is not None:
            played_out = (
                self._base
                + (self._k * self.chunk_frames + self._offset + self._lead_frames)
                / self.sample_rate
            )
            if now <= played_out:
                return  # the client still has audio: continue the schedule seamlessly
            if self._utterance:
                self._underruns += 1
        self._base, self._offset, self._k = now, -self._lead_frames, 0

    def _enqueue_chunks(self, chunk: bytes | EncodedChunk[M], count: int, now: float) -> None:
        self._start_if_idle(now)
        self._queue.extend(itertools.repeat(chunk, count))
        self._queued_chunks += count

    def _release_held_messages(self) -> None:
        self._queue.extend(self._held_messages)
        self._held_messages.clear()

    def _drop_audio(self) -> float:
        frames = self._queued_frames()
        self._dropped_frames += frames
        self._queued_chunks = 0
        self._held = b""
        self._utterance = False
        self._base = None
        return frames * 1000 / self.sample_rate
