"""Output audio scheduling (core/session/audio.py) and WAV headers (core/session/wav.py), on a
synthetic clock.

Nothing here sleeps: time is whatever ``now`` the test passes. Schedules are checked against
exact rationals (``Fraction``), so "no drift" means the float error of one addition, not a
tolerance that grows with the length of the stream.
"""

from __future__ import annotations

import bisect
import io
import itertools
import math
import struct
import wave
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wavewire.core.errors import InvalidState
from wavewire.core.session.audio import (
    TRANSITIONS,
    AudioBufferFull,
    AudioChunk,
    AudioOutput,
    AudioStats,
    Message,
    OutputItem,
    OutputState,
    OutputTrigger,
)
from wavewire.core.session.wav import WAV_HEADER_SIZE, wav_chunk, wav_header

T0 = 1000.25
RATES = [8000, 16000, 24000, 48000]


def pcm(frames: int, num_channels: int = 1, start: int = 1) -> bytes:
    """``frames`` sample frames of recognisable, never-silent samples (start, start+1, ...)."""
    return b"".join(
        struct.pack("<h", (start + i) % 30000 + 1) * num_channels for i in range(frames)
    )


def make(sample_rate: int = 16000, **kwargs: object) -> AudioOutput[str]:
    return AudioOutput(sample_rate=sample_rate, **kwargs)  # type: ignore[arg-type]


def finished(out: AudioOutput[str]) -> bool:
    # Read through a function: mypy would otherwise narrow the property between calls.
    return out.finished


def writable(out: AudioOutput[str]) -> bool:
    return out.writable


def state(out: AudioOutput[str]) -> OutputState:
    return out.state


def chunks(items: list[OutputItem[str]]) -> list[AudioChunk]:
    return [item for item in items if isinstance(item, AudioChunk)]


def drive(out: AudioOutput[str], *, until: float = math.inf) -> list[tuple[float, OutputItem[str]]]:
    """Call take_due at every deadline, as a punctual timer would; (send time, item) pairs."""
    sent: list[tuple[float, OutputItem[str]]] = []
    while (deadline := out.next_deadline()) is not None and deadline <= until:
        now = max(deadline, T0)  # a message queued before any clock reading is due at -inf
        sent += [(now, item) for item in out.take_due(now)]
    return sent


def exact_due(t0: float, k: int, out: AudioOutput[str], lead_frames: int = 0) -> Fraction:
    return Fraction(t0) + Fraction(k * out.chunk_frames - lead_frames, out.sample_rate)


def ulps(value: float, exact: Fraction) -> Fraction:
    return abs(Fraction(value) - exact) / Fraction(math.ulp(value))


# --- chunk sizes and pacing speed --------------------------------------------------------------


@pytest.mark.parametrize("num_channels", [1, 2])
@pytest.mark.parametrize("sample_rate", RATES)
def test_chunk_size_and_duration(sample_rate: int, num_channels: int) -> None:
    out = make(sample_rate, num_channels=num_channels)
    assert out.chunk_bytes == int(sample_rate / 100) * num_channels * 2 * 4
    assert out.chunk_frames == sample_rate // 25
    assert out.chunk_duration == 0.04  # the same for any channel count
    # Pipecat's interval is (chunk_bytes / sample_rate) / 2: right for mono, double for stereo.
    pipecat_interval = (out.chunk_bytes / sample_rate) / 2
    assert pipecat_interval == pytest.approx(out.chunk_duration * num_channels)


@pytest.mark.parametrize("num_channels", [1, 2])
@pytest.mark.parametrize("sample_rate", RATES)
def test_one_second_of_audio_is_paced_over_one_second(sample_rate: int, num_channels: int) -> None:
    out = make(sample_rate, num_channels=num_channels)
    audio = pcm(sample_rate, num_channels)
    out.write_audio(audio, T0)
    sent = drive(out)
    assert len(sent) == 25
    assert b"".join(c.data for _, c in sent if isinstance(c, AudioChunk)) == audio
    for k, (when, item) in enumerate(sent):
        assert isinstance(item, AudioChunk)
        assert len(item.data) == out.chunk_bytes
        assert when == item.due
        assert ulps(item.due, exact_due(T0, k, out)) <= 1
    assert sent[-1][0] == pytest.approx(T0 + 0.96, abs=1e-12)


@pytest.mark.parametrize(
    ("sample_rate", "chunks_10ms", "frames"),
    [(22050, 4, 880), (44100, 1, 441), (16000, 1, 160), (8000, 10, 800), (100, 1, 1)],
)
def test_other_rates_and_chunk_counts(sample_rate: int, chunks_10ms: int, frames: int) -> None:
    out = make(sample_rate, chunks_10ms=chunks_10ms)
    assert out.chunk_frames == frames
    assert out.chunk_duration == frames / sample_rate  # 22.05 kHz: 880 frames, 39.9 ms
    out.write_audio(pcm(frames * 3), T0)
    dues = [item.due for _, item in drive(out) if isinstance(item, AudioChunk)]
    assert [ulps(d, exact_due(T0, k, out)) <= 1 for k, d in enumerate(dues)] == [True] * 3


# --- chunking ----------------------------------------------------------------------------------


def test_partial_chunk_is_held_then_padded_at_end_utterance() -> None:
    out = make()
    audio = pcm(640 + 100)
    out.write_audio(audio, T0)
    assert out.stats.queued_seconds == pytest.approx(740 / 16000)
    first = out.take_due(T0)
    assert [type(i) for i in first] == [AudioChunk]
    assert out.next_deadline() is None  # the partial chunk is held, not queued
    out.end_utterance(T0 + 0.01)
    second = chunks(out.take_due(T0 + 0.04))
    assert len(second) == 1
    assert second[0].data == audio[1280:] + bytes(1280 - 200)
    assert out.stats.queued_seconds == 0
    out.end_utterance(T0 + 0.05)  # nothing held: nothing happens
    assert out.next_deadline() is None


@settings(max_examples=40, deadline=None)
@given(
    num_channels=st.sampled_from([1, 2]),
    splits=st.lists(st.integers(min_value=0, max_value=2000), min_size=1, max_size=12),
)
def test_any_split_of_the_input_gives_the_same_chunks(num_channels: int, splits: list[int]) -> None:
    out = make(8000, num_channels=num_channels, max_queued_seconds=100.0)
    pieces = [pcm(n, num_channels, start=i * 7) for i, n in enumerate(splits)]
    for piece in pieces:
        out.write_audio(piece, T0)
    out.end_utterance(T0)
    sent = b"".join(c.data for _, c in drive(out) if isinstance(c, AudioChunk))
    audio = b"".join(pieces)
    padded = -len(audio) % out.chunk_bytes
    assert sent == audio + bytes(padded)
    assert out.stats.bytes_sent == len(sent)


# --- the schedule ------------------------------------------------------------------------------


def test_chunk_k_is_due_at_t0_plus_k_chunk_durations_and_not_before() -> None:
    out = make()
    out.write_audio(pcm(640 * 5), T0)
    for k in range(5):
        due = out.next_deadline()
        assert due is not None
        assert ulps(due, exact_due(T0, k, out)) <= 1
        assert out.take_due(math.nextafter(due, -math.inf)) == []  # not a moment early
        [item] = out.take_due(due)
        assert isinstance(item, AudioChunk)
        assert item.due == due
    assert out.next_deadline() is None
    assert out.stats == AudioStats(
        chunks_sent=5,
        bytes_sent=5 * 1280,
        messages_sent=0,
        underruns=0,
        stalls=0,
        late_seconds=0.0,
        dropped_ms_total=0.0,
        queued_seconds=0.0,
    )


def test_one_hour_stream_has_zero_drift() -> None:
    # 16 kHz mono, 40 ms chunks: 90,000 chunks, fed a second at a time as the queue drains.
    out = make(16000, max_queued_seconds=5.0)
    second = pcm(16000)
    n_chunks = 90_000
    dues: list[float] = []
    written = 0
    now = T0
    while True:
        while written < 3600 and out.stats.queued_seconds < 1.0:
            out.write_audio(second, now)
            written += 1
        deadline = out.next_deadline()
        if deadline is None:
            break
        now = deadline
        for item in out.take_due(now):
            assert isinstance(item, AudioChunk)
            assert item.due == now  # sent exactly when due
            dues.append(item.due)
    assert len(dues) == n_chunks
    worst = max(ulps(d, exact_due(T0, k, out)) for k, d in enumerate(dues))
    assert worst <= 1  # each due time is the exact t0 + k*d rounded once: no accumulation
    span = Fraction(dues[-1]) - Fraction(dues[0])
    drift = span - Fraction((n_chunks - 1) * 640, 16000)
    assert abs(drift) <= Fraction(math.ulp(dues[-1]))
    stats = out.stats
    assert (stats.underruns, stats.stalls, stats.late_seconds) == (0, 0, 0.0)
    assert stats.bytes_sent == 3600 * 32000


@settings(max_examples=40, deadline=None)
@given(
    lead_chunks=st.integers(min_value=1, max_value=5),
    gaps=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=300),
)
def test_jittered_calls_keep_the_rate_exact_and_bursts_bounded(
    lead_chunks: int, gaps: list[float]
) -> None:
    # take_due at random times, never further apart than the lead: the schedule never moves,
    # every chunk goes out on its grid, and no call sends more than the lead plus one chunk.
    out = make(16000, lead=0.04 * lead_chunks, max_queued_seconds=100.0)
    assert out.max_burst == lead_chunks + 1
    total = 250
    out.write_audio(pcm(640 * total), T0)
    # The grid, as floats (each checked against the exact value at the end).
    grid = [T0 + (k * 640 - 640 * lead_chunks) / 16000 for k in range(total)]
    # The owner takes the first chunks when the stream starts (their deadline is already past
    # after the write). They are the lead, so later calls may each be up to a lead late.
    now = T0
    sent = chunks(out.take_due(now))
    assert len(sent) == out.max_burst
    for gap in gaps:
        now += gap * out.lead
        batch = chunks(out.take_due(now))
        assert len(batch) <= out.max_burst
        sent += batch
        # Exactly the chunks whose time has come have left: never ahead, never behind.
        assert len(sent) == bisect.bisect_right(grid, now)
    for k, chunk in enumerate(sent):
        assert ulps(chunk.due, exact_due(T0, k, out, 640 * lead_chunks)) <= 1
    assert out.stats.stalls == 0


@settings(max_examples=40, deadline=None)
@given(
    lead_chunks=st.integers(min_value=0, max_value=4),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=200),
)
def test_any_lateness_is_caught_up_within_the_lead_and_the_rest_shifts(
    lead_chunks: int, gaps: list[float]
) -> None:
    out = make(16000, lead=0.04 * lead_chunks, max_queued_seconds=100.0)
    out.write_audio(pcm(640 * 200), T0)
    now = T0
    sent: list[AudioChunk] = []
    for gap in gaps:
        now += gap
        batch = chunks(out.take_due(now))
        assert len(batch) <= out.max_burst  # the lead plus one chunk, however late
        assert all(c.due <= now for c in batch)
        sent += batch
    stats = out.stats
    steps = [b.due - a.due for a, b in itertools.pairwise(sent)]
    # The grid holds except where the schedule moved, by at least a chunk each time; the moves
    # add up to late_seconds (the last may not be followed by a chunk yet).
    shifts = [s - out.chunk_duration for s in steps if abs(s - out.chunk_duration) > 1e-9]
    assert all(s >= out.chunk_duration - 1e-9 for s in shifts)
    assert stats.stalls - len(shifts) in (0, 1)
    if stats.stalls == len(shifts):
        assert sum(shifts) == pytest.approx(stats.late_seconds, abs=1e-9)
    span = sent[-1].due - sent[0].due
    assert span == pytest.approx((len(sent) - 1) * 0.04 + sum(shifts), abs=1e-9)


# --- lead, underruns and stalls ----------------------------------------------------------------


def test_lead_sends_the_first_chunks_at_once() -> None:
    out = make(16000, lead=0.12)  # 0.12 * 25 is 2.9999999999999996 in floats; frames are exact
    assert out.lead == 0.12
    assert out.max_burst == 4
    out.write_audio(pcm(640 * 10), T0)
    first = chunks(out.take_due(T0))
    assert [ulps(c.due, exact_due(T0, k, out, 1920)) <= 1 for k, c in enumerate(first)] == [
        True
    ] * 4
    assert out.next_deadline() == pytest.approx(T0 + 0.04, abs=1e-12)
    assert out.stats.stalls == 0


def test_lead_is_rounded_to_whole_frames() -> None:
    out = make(8000, lead=0.00001)  # 0.08 of a frame
    assert out.lead == 0.0
    assert out.max_burst == 1
    out = make(8000, lead=0.05)  # more than one 40 ms chunk, less than two
    assert out.max_burst == 2


def test_producer_underrun_restarts_the_stream_and_is_counted() -> None:
    out = make()
    out.write_audio(pcm(640 * 2), T0)
    drive(out)  # played out at T0 + 0.08
    out.write_audio(pcm(640), T0 + 0.5)
    [chunk] = out.take_due(T0 + 0.5)
    assert isinstance(chunk, AudioChunk)
    assert chunk.due == T0 + 0.5  # a new stream, from now
    assert out.stats.underruns == 1


def test_audio_arriving_before_the_client_ran_dry_continues_the_schedule() -> None:
    out = make()
    out.write_audio(pcm(640 * 2), T0)
    drive(out)
    out.write_audio(pcm(640), T0 + 0.08)  # exactly when the client plays its last sample
    due = out.next_deadline()
    assert due is not None
    assert ulps(due, exact_due(T0, 2, out)) <= 1
    assert out.stats.underruns == 0


def test_audio_within_the_lead_window_continues_and_refills() -> None:
    out = make(lead=0.08)  # max_burst 3
    out.write_audio(pcm(640 * 3), T0)
    drive(out)  # chunks 0-2 due at T0-0.08, -0.04, 0: the client has audio until T0 + 0.12
    out.write_audio(pcm(640 * 5), T0 + 0.1)
    batch = chunks(out.take_due(T0 + 0.1))
    assert len(batch) == 2  # chunks 3 and 4 (due T0+0.04, T0+0.08): back to a full lead
    assert ulps(batch[0].due, exact_due(T0, 3, out, 1280)) <= 1
    assert (out.stats.underruns, out.stats.stalls) == (0, 0)


def test_a_new_utterance_after_silence_is_not_an_underrun() -> None:
    out = make()
    out.write_audio(pcm(700), T0)
    out.end_utterance(T0)
    drive(out)
    out.write_audio(pcm(640), T0 + 5)
    assert out.next_deadline() == T0 + 5
    assert out.stats.underruns == 0


def test_a_late_end_utterance_with_a_held_tail_is_an_underrun() -> None:
    out = make()
    out.write_audio(pcm(700), T0)
    drive(out)
    out.end_utterance(T0 + 1)  # the producer stalled mid-utterance: the client heard a gap
    assert out.next_deadline() == T0 + 1
    assert out.stats.underruns == 1


def test_sender_stall_is_caught_up_by_at_most_the_lead() -> None:
    out = make(lead=0.08)  # max_burst 3
    out.write_audio(pcm(640 * 50), T0)
    assert len(out.take_due(T0)) == 3  # chunks 0-2, the lead
    # The loop stalls for a second: chunks 3..27 are all due, but only 3 go out.
    now = T0 + 1.0
    late = chunks(out.take_due(now))
    assert len(late) == 3
    assert late[0].due == pytest.approx(T0 + 0.04, abs=1e-12)
    stats = out.stats
    assert stats.stalls == 1
    # Chunk 6 was due at T0 + 0.16; it is now due one chunk after the stall's end.
    assert out.next_deadline() == now + 0.04
    assert stats.late_seconds == pytest.approx(now + 0.04 - (T0 + 0.16), abs=1e-12)
    # From there the grid is exact again.
    rest = [c for _, c in drive(out) if isinstance(c, AudioChunk)]
    assert len(rest) == 44
    for k, chunk in enumerate(rest):
        assert ulps(chunk.due, Fraction(now) + Fraction(640 * (k + 1), 16000)) <= 1
    assert out.stats.stalls == 1


def test_without_lead_a_stall_sends_one_chunk() -> None:
    out = make()
    out.write_audio(pcm(640 * 10), T0)
    assert len(out.take_due(T0 + 0.2)) == 1
    assert out.stats.stalls == 1
    assert out.stats.late_seconds == pytest.approx(0.2, abs=1e-12)


# --- messages ----------------------------------------------------------------------------------


def test_messages_keep_their_place_among_the_chunks() -> None:
    out = make()
    out.queue_message("first")
    out.write_audio(pcm(640 * 2), T0)
    out.queue_message("after two chunks")
    out.write_audio(pcm(640), T0)
    out.queue_message("after three")
    out.queue_message("and another")
    sent = drive(out)
    labels = [
        item.item if isinstance(item, Message) else f"chunk@{when - T0:.2f}" for when, item in sent
    ]
    assert labels == [
        "first",
        "chunk@0.00",
        "chunk@0.04",
        "after two chunks",
        "chunk@0.08",
        "after three",
        "and another",
    ]
    # A message goes out with the chunk ahead of it and takes no playing time.
    assert sent[2][0] == sent[3][0]
    assert out.stats.messages_sent == 4


def test_a_message_with_nothing_ahead_is_due_at_once() -> None:
    out = make()
    out.queue_message("hello")
    assert out.next_deadline() == -math.inf  # no clock seen yet: any time is late enough
    assert out.take_due(T0) == [Message("hello")]
    out.queue_message("again")
    assert out.next_deadline() == T0  # the last now given: already past
    assert out.take_due(T0) == [Message("again")]


def test_a_message_behind_a_held_partial_chunk_follows_that_chunk() -> None:
    out = make()
    out.write_audio(pcm(640 + 100), T0)  # one chunk queued, 100 frames held
    out.queue_message("after 740 frames")
    assert [type(i) for i in out.take_due(T0)] == [AudioChunk]
    assert out.next_deadline() is None  # the message waits for the chunk its audio is in
    out.write_audio(pcm(540 + 640), T0 + 0.02)  # completes that chunk, and one more
    out.queue_message("after 1920 frames")  # nothing held now: queued at once
    labels = [item.item if isinstance(item, Message) else "chunk" for _, item in drive(out)]
    assert labels == ["chunk", "after 740 frames", "chunk", "after 1920 frames"]


def test_held_messages_are_released_by_end_utterance_end_and_interrupt() -> None:
    out = make()
    out.write_audio(pcm(100), T0)
    out.queue_message("a")
    out.end_utterance(T0)
    assert [type(i) for i in out.take_due(T0)] == [AudioChunk, Message]
    out.write_audio(pcm(100), T0 + 1)
    out.queue_message("b")
    out.interrupt()  # the audio is dropped, the message stays
    assert out.take_due(T0 + 1) == [Message("b")]
    ending = make()
    ending.write_audio(pcm(100), T0)
    ending.queue_message("c")
    ending.end(T0)
    labels = [type(item).__name__ for _, item in drive(ending)]
    assert labels == ["AudioChunk", "Message"] + ["AudioChunk"] * 50


def test_cancel_drops_held_messages_too() -> None:
    out = make()
    out.write_audio(pcm(100), T0)
    out.queue_message("never sent")
    out.cancel()
    assert out.next_deadline() is None
    assert out.take_due(T0 + 1) == []
    assert out.stats.messages_sent == 0


# --- interruption ------------------------------------------------------------------------------


def test_interrupt_drops_all_audio_keeps_messages_and_reports_ms() -> None:
    out = make()
    out.write_audio(pcm(640 * 5), T0)
    out.queue_message("behind audio")
    out.write_audio(pcm(640 * 2 + 80), T0)
    out.queue_message("last")
    out.take_due(T0)
    assert len(out.take_due(T0 + 0.04)) == 1
    dropped = out.interrupt()
    assert dropped == (640 * 5 + 80) * 1000 / 16000  # 3 + 2 chunks and the held 80 frames: 205 ms
    assert dropped == 205.0
    assert out.take_due(T0 + 0.04) == [Message("behind audio"), Message("last")]
    assert drive(out) == []  # no audio ever leaves after the interruption
    assert out.stats.dropped_ms_total == 205.0
    assert out.stats.queued_seconds == 0
    assert out.interrupt() == 0.0
    # The next audio starts a new stream at its own time; that is not an underrun.
    out.write_audio(pcm(640), T0 + 0.05)
    assert out.next_deadline() == T0 + 0.05
    assert out.stats.underruns == 0


def test_interrupt_while_ending_finishes_once_messages_are_out() -> None:
    out = make()
    out.write_audio(pcm(640 * 3), T0)
    out.queue_message("bye")
    out.end(T0)
    assert state(out) is OutputState.ENDING
    assert out.interrupt() == pytest.approx(120.0 + 2000.0)
    assert not finished(out)
    assert out.take_due(T0) == [Message("bye")]
    assert finished(out)
    out2 = make()
    out2.write_audio(pcm(640), T0)
    out2.end(T0)
    out2.interrupt()
    assert finished(out2)  # nothing but audio was queued


# --- end and cancel ----------------------------------------------------------------------------


def test_end_flushes_then_sends_paced_silence_then_finishes() -> None:
    out = make()
    audio = pcm(640 + 320)
    out.write_audio(audio, T0)
    out.queue_message("goodbye")
    out.end(T0)
    assert state(out) is OutputState.ENDING
    with pytest.raises(InvalidState, match="ending"):
        out.write_audio(pcm(640), T0)
    with pytest.raises(InvalidState):
        out.queue_message("late")
    out.end(T0)  # idempotent
    sent = drive(out)
    kinds = [type(item).__name__ for _, item in sent]
    # The message follows the audio written before it, including the padded partial chunk.
    assert kinds == ["AudioChunk", "AudioChunk", "Message"] + ["AudioChunk"] * 50
    audio_chunks = chunks([item for _, item in sent])
    assert audio_chunks[1].data == audio[1280:] + bytes(640)
    assert all(c.data == bytes(1280) for c in audio_chunks[2:])
    for k, chunk in enumerate(audio_chunks):  # silence is paced like audio, 2 s of it
        assert ulps(chunk.due, exact_due(T0, k, out)) <= 1
    assert finished(out)
    assert state(out) is OutputState.FINISHED
    assert out.next_deadline() is None
    assert out.take_due(T0 + 10) == []


def test_finished_turns_true_only_with_the_last_item() -> None:
    out = make(end_silence_secs=0.1)  # rounded up to 3 chunks of 40 ms
    out.end(T0)
    assert out.stats.queued_seconds == pytest.approx(0.12)
    assert out.next_deadline() == T0  # the silence starts a stream now
    for k in range(3):
        assert not finished(out)
        assert len(out.take_due(T0 + 0.04 * k)) == 1
    assert finished(out)


def test_end_with_nothing_to_send_finishes_at_once() -> None:
    out = make(end_silence_secs=0)
    out.end(T0)
    assert finished(out)
    assert out.next_deadline() is None
    out.end_utterance(T0)  # harmless
    assert out.cancel() == 0.0  # idempotent on a finished output
    assert finished(out)


def test_end_silence_continues_a_stream_still_playing() -> None:
    out = make(end_silence_secs=0.04)
    out.write_audio(pcm(640), T0)
    out.take_due(T0)
    out.end(T0 + 0.01)
    assert out.next_deadline() == pytest.approx(T0 + 0.04, abs=1e-12)


def test_cancel_drops_everything_at_once() -> None:
    out = make()
    out.write_audio(pcm(640 * 4 + 16), T0)
    out.queue_message("never sent")
    out.take_due(T0)
    assert out.cancel() == pytest.approx(121.0)
    assert finished(out)
    assert out.next_deadline() is None
    assert out.take_due(T0 + 1) == []
    assert out.stats.dropped_ms_total == pytest.approx(121.0)
    with pytest.raises(InvalidState, match="finished"):
        out.write_audio(pcm(640), T0)
    out.end(T0)  # nothing to end any more
    assert out.cancel() == 0.0
    ending = make()
    ending.write_audio(pcm(640), T0)
    ending.end(T0)
    assert ending.cancel() == pytest.approx(2040.0)
    assert finished(ending)


def test_transition_table() -> None:
    assert TRANSITIONS == {
        (OutputState.OPEN, OutputTrigger.END): OutputState.ENDING,
        (OutputState.OPEN, OutputTrigger.CANCEL): OutputState.FINISHED,
        (OutputState.ENDING, OutputTrigger.DRAINED): OutputState.FINISHED,
        (OutputState.ENDING, OutputTrigger.CANCEL): OutputState.FINISHED,
    }
    out = make()
    with pytest.raises(AssertionError, match="no transition"):
        out._transition(OutputTrigger.DRAINED)


# --- backpressure ------------------------------------------------------------------------------


def test_write_is_refused_when_the_queue_is_full_and_accepted_after_a_send() -> None:
    out = make(max_queued_seconds=0.1)
    out.write_audio(pcm(1600), T0)  # exactly 0.1 s: accepted, the queue was empty
    assert not writable(out)
    with pytest.raises(AudioBufferFull, match="max_queued_seconds"):
        out.write_audio(pcm(640), T0)
    assert out.stats.queued_seconds == pytest.approx(0.1)  # nothing was queued
    out.take_due(T0)
    assert writable(out)
    out.write_audio(pcm(640), T0)
    out.end(T0)
    assert out.stats.queued_seconds > 0.1 + 1.9  # end silence is never refused
    assert not writable(out)


def test_a_write_larger_than_the_limit_is_accepted_into_an_empty_queue() -> None:
    out = make(max_queued_seconds=0.1)
    out.write_audio(pcm(16000), T0)
    assert out.stats.queued_seconds == pytest.approx(1.0)
    assert not writable(out)
    tiny = make(max_queued_seconds=1e-9)  # less than a frame: still one write at a time
    assert writable(tiny)
    tiny.write_audio(pcm(640), T0)
    assert not writable(tiny)
    tiny.take_due(T0)
    assert writable(tiny)


# --- validation --------------------------------------------------------------------------------


def test_write_audio_rejects_partial_sample_frames() -> None:
    out = make(num_channels=2)
    with pytest.raises(ValueError, match="not a whole number of sample frames"):
        out.write_audio(b"\x00\x01", T0)  # one sample of a stereo frame
    with pytest.raises(ValueError, match="4 bytes each"):
        out.write_audio(b"\x00" * 1283, T0)
    assert out.stats.queued_seconds == 0
    assert out.next_deadline() is None
    out.write_audio(b"", T0)  # empty: nothing to do
    assert out.next_deadline() is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sample_rate": 99}, ValueError, "sample_rate must be at least 100"),
        ({"sample_rate": 0}, ValueError, "sample_rate"),
        ({"sample_rate": 16000.0}, TypeError, "sample_rate must be an int"),
        ({"sample_rate": True}, TypeError, "sample_rate"),
        ({"num_channels": 0}, ValueError, "num_channels"),
        ({"chunks_10ms": 0}, ValueError, "chunks_10ms"),
        ({"lead": -0.01}, ValueError, "lead must be a finite, non-negative"),
        ({"lead": math.nan}, ValueError, "lead"),
        ({"lead": math.inf}, ValueError, "lead"),
        ({"lead": "0.1"}, TypeError, "lead must be a number"),
        ({"lead": False}, TypeError, "lead"),
        ({"end_silence_secs": -1}, ValueError, "end_silence_secs"),
        ({"max_queued_seconds": 0}, ValueError, "max_queued_seconds must be a finite, positive"),
        ({"add_wav_header": 1}, TypeError, "add_wav_header"),
        ({"num_channels": 40000, "add_wav_header": True}, ValueError, "block align"),
    ],
)
def test_invalid_configuration(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"sample_rate": 16000, **kwargs}
    with pytest.raises(error, match=match):
        AudioOutput(**args)  # type: ignore[arg-type]


def test_integer_seconds_are_accepted() -> None:
    out = make(end_silence_secs=2, max_queued_seconds=30, lead=0)
    assert out.stats.queued_seconds == 0


# --- WAV headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("num_channels", [1, 2])
@pytest.mark.parametrize("sample_rate", RATES)
def test_wav_chunk_reads_back_with_the_standard_library(
    sample_rate: int, num_channels: int
) -> None:
    samples = pcm(sample_rate // 25, num_channels)
    data = wav_chunk(samples, sample_rate, num_channels)
    assert len(data) == WAV_HEADER_SIZE + len(samples)
    with wave.open(io.BytesIO(data), "rb") as reader:
        assert reader.getnchannels() == num_channels
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == sample_rate
        assert reader.getnframes() == sample_rate // 25
        assert reader.getcomptype() == "NONE"
        assert reader.readframes(reader.getnframes()) == samples


def test_wav_header_fields() -> None:
    header = wav_header(1280, 16000, 2)
    assert header == (
        b"RIFF"
        + struct.pack("<I", 36 + 1280)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 2, 16000, 64000, 4, 16)
        + b"data"
        + struct.pack("<I", 1280)
    )
    # The same header the stdlib writes for the same audio.
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(bytes(1280))
    assert buffer.getvalue() == header + bytes(1280)


@pytest.mark.parametrize(
    ("data_size", "sample_rate", "num_channels", "match"),
    [
        (0, 16000, 0, "num_channels must be in 1..65535"),
        (0, 16000, 65536, "num_channels"),
        (0, 16000, 40000, "block align"),
        (0, 0, 1, "sample_rate must be positive"),
        (0, 2**31, 1, "sample_rate"),  # byte rate 2**32 does not fit
        (-2, 16000, 1, "not a whole number"),
        (3, 16000, 1, "not a whole number of 1-channel"),
        (2**32, 16000, 1, "do not fit a WAV file"),
    ],
)
def test_wav_header_rejects_what_does_not_fit(
    data_size: int, sample_rate: int, num_channels: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        wav_header(data_size, sample_rate, num_channels)


def test_output_with_wav_header_sends_a_wav_file_per_chunk() -> None:
    out = make(24000, num_channels=2, add_wav_header=True)
    audio = pcm(960 * 2, 2)
    out.write_audio(audio, T0)
    sent = chunks([item for _, item in drive(out)])
    assert len(sent) == 2
    for k, chunk in enumerate(sent):
        assert len(chunk.data) == WAV_HEADER_SIZE + out.chunk_bytes
        with wave.open(io.BytesIO(chunk.data), "rb") as reader:
            assert (reader.getnchannels(), reader.getframerate()) == (2, 24000)
            assert reader.readframes(960) == audio[k * 3840 : (k + 1) * 3840]
    assert out.stats.bytes_sent == 2 * out.chunk_bytes  # PCM only


def test_chunk_repr_is_short() -> None:
    assert repr(AudioChunk(bytes(1280), 1.5)) == "AudioChunk(1280 bytes, due=1.5)"
