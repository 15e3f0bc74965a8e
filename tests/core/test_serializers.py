"""Serializers: hand-derived protobuf wire vectors, round trips, and every error path.

The expected protobuf bytes are written out by hand from the encoding rules (tag byte =
field_number << 3 | wire_type; wire type 0 = varint, 2 = length-delimited; varints are 7 bits
per byte, least significant group first, high bit set on all but the last byte), so they check
the generated code against the format itself, not against itself.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import wavewire.core.serializers as serializers_pkg
from wavewire.core.frames import (
    AudioRawFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TranscriptionFrame,
)
from wavewire.core.serializers import (
    FrameSerializer,
    ProtobufFrameSerializer,
    RawFrameSerializer,
    SerializationError,
)
from wavewire.core.serializers._pb import frames_pb2 as pb
from wavewire.core.serializers.base import dumps_message, loads_message

PROTO = ProtobufFrameSerializer()
RAW = RawFrameSerializer()

AUDIO_TYPES = [OutputAudioRawFrame, InputAudioRawFrame, AudioRawFrame]
MESSAGE_TYPES = [OutputTransportMessageFrame, OutputTransportMessageUrgentFrame]

UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class _MyTextFrame(TextFrame):
    """An application's subclass: sent as its closest known kind."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _MyAudioFrame(OutputAudioRawFrame):
    """An application's subclass: sent as audio."""


def _assert_same_frame(got: Frame | None, want: Frame) -> None:
    """Equal fields, exact type, and the same id and name (which == ignores)."""
    assert isinstance(got, Frame)
    assert type(got) is type(want)
    assert got == want
    assert got.id == want.id
    assert got.name == want.name


# --------------------------------------------------------------------------------------------
# The protocol


def test_both_serializers_satisfy_the_protocol() -> None:
    # Static check (mypy) and runtime check (runtime_checkable).
    serializers: list[FrameSerializer] = [PROTO, RAW]
    for serializer in serializers:
        assert isinstance(serializer, FrameSerializer)
    assert not isinstance(object(), FrameSerializer)


def test_serialization_error_is_a_value_error() -> None:
    assert issubclass(SerializationError, ValueError)


def test_package_exports() -> None:
    assert set(serializers_pkg.__all__) == {
        "FrameSerializer",
        "ProtobufFrameSerializer",
        "RawFrameSerializer",
        "SerializationError",
        # Telephony (tests/core/test_telephony_serializers.py).
        "ExotelFrameSerializer",
        "PlivoFrameSerializer",
        "TelnyxFrameSerializer",
        "TwilioFrameSerializer",
        "VonageFrameSerializer",
    }


FORBIDDEN_IMPORTS = {"asyncio", "anyio", "trio", "socket", "time", "random", "secrets", "threading"}


@pytest.mark.parametrize("module", ["base.py", "protobuf.py", "raw.py", "__init__.py"])
def test_serializer_modules_import_nothing_impure(module: str) -> None:
    assert serializers_pkg.__file__ is not None
    source = Path(serializers_pkg.__file__).with_name(module).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module.split(".")[0])
    assert imported, "the walk found no imports at all: the check itself is broken"
    assert not imported & FORBIDDEN_IMPORTS


# --------------------------------------------------------------------------------------------
# Protobuf: serialize, against hand-derived bytes

# Frame.text (field 1, LEN: 0x0a), 9 bytes: id=1 (0x08 0x01), name="t" (0x12 0x01 "t"),
# text="hi" (0x1a 0x02 "hi").
TEXT_BYTES = b"\x0a\x09" b"\x08\x01" b"\x12\x01t" b"\x1a\x02hi"  # fmt: skip

# Frame.audio (field 2, LEN: 0x12), 17 bytes: id=5, name="a", audio (field 3, 4 bytes),
# sample_rate=24000 (field 4, varint 0x20; 24000 = 0b1_0111011_1000000 -> c0 bb 01),
# num_channels=1 (field 5, varint: 0x28 0x01). pts (field 6) is never sent.
AUDIO_PCM = b"\x01\x00\xff\x7f"
AUDIO_BYTES = (
    b"\x12\x11" b"\x08\x05" b"\x12\x01a" b"\x1a\x04" + AUDIO_PCM + b"\x20\xc0\xbb\x01" b"\x28\x01"
)  # fmt: skip

# Multi-byte varints elsewhere: id=300 (ac 02), 48000 Hz (80 f7 02), 2 channels; 16 bytes.
STEREO_BYTES = (
    b"\x12\x10" b"\x08\xac\x02" b"\x12\x01s" b"\x1a\x02\x00\x00" b"\x20\x80\xf7\x02" b"\x28\x02"
)  # fmt: skip

# Frame.transcription (field 3, LEN: 0x1a), 37 bytes: id=2, name="tr", text="hey",
# user_id="u1" (field 4: 0x22), timestamp (field 5: 0x2a, 20 bytes = 0x14).
TRANSCRIPTION_BYTES = (
    b"\x1a\x25" b"\x08\x02" b"\x12\x02tr" b"\x1a\x03hey" b"\x22\x02u1"
    b"\x2a\x142024-01-01T00:00:00Z"
)  # fmt: skip

# Frame.message (field 4, LEN: 0x22), 10 bytes: data (field 1: 0x0a), 8 bytes of JSON text
# exactly as Python's json.dumps writes it (", " and ": " separators), as Pipecat does.
MESSAGE_BYTES = b"\x22\x0a" b"\x0a\x08" b'{"a": 1}'  # fmt: skip

# Frame.interruption (field 5, LEN: 0x2a), 5 bytes: id=7, name="i".
INTERRUPTION_BYTES = b"\x2a\x05" b"\x08\x07" b"\x12\x01i"  # fmt: skip


def test_serialize_text_vector() -> None:
    assert PROTO.serialize(TextFrame(id=1, name="t", text="hi")) == TEXT_BYTES


def test_serialize_empty_text_omits_the_field() -> None:
    # proto3 leaves default values (0, "", b"") off the wire.
    assert PROTO.serialize(TextFrame(id=1, name="t", text="")) == b"\x0a\x05\x08\x01\x12\x01t"


@pytest.mark.parametrize("cls", AUDIO_TYPES)
def test_serialize_audio_vector(cls: type[AudioRawFrame]) -> None:
    frame = cls(id=5, name="a", audio=AUDIO_PCM, sample_rate=24000, num_channels=1)
    assert PROTO.serialize(frame) == AUDIO_BYTES


def test_serialize_stereo_audio_vector() -> None:
    frame = OutputAudioRawFrame(
        id=300, name="s", audio=b"\x00\x00", sample_rate=48000, num_channels=2
    )
    assert PROTO.serialize(frame) == STEREO_BYTES


def test_serialize_transcription_vector() -> None:
    frame = TranscriptionFrame(
        id=2, name="tr", text="hey", user_id="u1", timestamp="2024-01-01T00:00:00Z"
    )
    assert PROTO.serialize(frame) == TRANSCRIPTION_BYTES


@pytest.mark.parametrize("cls", MESSAGE_TYPES)
def test_serialize_message_vector(cls: type[OutputTransportMessageFrame]) -> None:
    assert PROTO.serialize(cls(message={"a": 1})) == MESSAGE_BYTES


def test_serialize_message_escapes_non_ascii_like_json_dumps() -> None:
    # json.dumps's default ensure_ascii: "é" travels as the 6 characters \u00e9.
    data = b'{"t": "\\u00e9"}'
    assert len(data) == 15
    assert PROTO.serialize(OutputTransportMessageFrame(message={"t": "é"})) == (
        b"\x22\x11\x0a\x0f" + data
    )


def test_serialize_interruption_vector() -> None:
    assert PROTO.serialize(InterruptionFrame(id=7, name="i")) == INTERRUPTION_BYTES


def test_serialize_big_id_is_a_ten_byte_varint() -> None:
    frame = InterruptionFrame(id=UINT64_MAX, name="i")
    assert PROTO.serialize(frame) == b"\x2a\x0e\x08" + b"\xff" * 9 + b"\x01" + b"\x12\x01i"


@pytest.mark.parametrize(
    "frame",
    [
        EndFrame(),
        CancelFrame(),
        Frame(),
        InputTransportMessageFrame(message={"a": 1}),
    ],
    ids=repr,
)
def test_serialize_unsent_kinds_give_none(frame: Frame) -> None:
    assert PROTO.serialize(frame) is None


@pytest.mark.parametrize(
    "frame",
    [
        TextFrame(id=-1, text="x"),
        TextFrame(id=UINT64_MAX + 1, text="x"),
        TextFrame(text="\ud800"),  # a lone surrogate cannot be encoded as UTF-8
        TranscriptionFrame(text="x", user_id="\udfff", timestamp=""),
        OutputAudioRawFrame(audio=b"", sample_rate=UINT32_MAX + 1),
        OutputAudioRawFrame(audio=b"", sample_rate=16000, num_channels=UINT32_MAX + 1),
        InterruptionFrame(id=-5),
        OutputTransportMessageFrame(message=object()),
        OutputTransportMessageFrame(message={"x": math.nan}),
        OutputTransportMessageUrgentFrame(message=[math.inf]),
        TextFrame(text=123),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_serialize_unencodable_frames_raise_serialization_error(frame: Frame) -> None:
    with pytest.raises(SerializationError):
        PROTO.serialize(frame)


def test_serialize_circular_message_raises_serialization_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="JSON"):
        PROTO.serialize(OutputTransportMessageFrame(message=loop))


# --------------------------------------------------------------------------------------------
# Protobuf: deserialize hand-written bytes


def test_deserialize_text_vector() -> None:
    _assert_same_frame(PROTO.deserialize(TEXT_BYTES), TextFrame(id=1, name="t", text="hi"))


def test_deserialize_audio_vector_gives_input_audio() -> None:
    _assert_same_frame(
        PROTO.deserialize(AUDIO_BYTES),
        InputAudioRawFrame(id=5, name="a", audio=AUDIO_PCM, sample_rate=24000, num_channels=1),
    )


def test_deserialize_stereo_audio_vector() -> None:
    _assert_same_frame(
        PROTO.deserialize(STEREO_BYTES),
        InputAudioRawFrame(id=300, name="s", audio=b"\x00\x00", sample_rate=48000, num_channels=2),
    )


def test_deserialize_transcription_vector() -> None:
    _assert_same_frame(
        PROTO.deserialize(TRANSCRIPTION_BYTES),
        TranscriptionFrame(
            id=2, name="tr", text="hey", user_id="u1", timestamp="2024-01-01T00:00:00Z"
        ),
    )


def test_deserialize_message_vector() -> None:
    frame = PROTO.deserialize(MESSAGE_BYTES)
    assert type(frame) is InputTransportMessageFrame
    assert frame.message == {"a": 1}
    assert frame.name.startswith("InputTransportMessageFrame#")


def test_deserialize_interruption_vector() -> None:
    _assert_same_frame(PROTO.deserialize(INTERRUPTION_BYTES), InterruptionFrame(id=7, name="i"))


def test_deserialize_js_client_audio() -> None:
    # What @pipecat-ai/websocket-transport sends for the mic: protobufjs writes id even when
    # it is 0 (0x08 0x00), name "audio", 16 kHz mono. 20 bytes inside Frame.audio.
    pcm = b"\x10\x00\xf0\xff"
    data = (
        b"\x12\x14" b"\x08\x00" b"\x12\x05audio" b"\x1a\x04" + pcm + b"\x20\x80\x7d" b"\x28\x01"
    )  # fmt: skip
    frame = PROTO.deserialize(data)
    assert type(frame) is InputAudioRawFrame
    assert frame == InputAudioRawFrame(audio=pcm, sample_rate=16000, num_channels=1)
    assert frame.name == "audio"
    assert frame.id > 0  # id 0 means unset: the frame got a fresh one
    assert frame.num_frames == 2


def test_deserialize_js_client_message() -> None:
    # Frame{message{data: JSON}}, the RTVI client-ready message; JSON.stringify has no spaces.
    body = b'{"type":"client-ready"}'
    assert len(body) == 0x17
    frame = PROTO.deserialize(b"\x22\x19\x0a\x17" + body)
    assert type(frame) is InputTransportMessageFrame
    assert frame.message == {"type": "client-ready"}


def test_deserialize_keeps_name_without_id_and_id_without_name() -> None:
    named = PROTO.deserialize(b"\x0a\x08\x12\x02nm\x1a\x02hi")  # no id
    assert type(named) is TextFrame
    assert named.name == "nm"
    assert named.id > 0
    numbered = PROTO.deserialize(b"\x2a\x02\x08\x2a")  # id=42, no name
    assert type(numbered) is InterruptionFrame
    assert numbered.id == 42
    assert numbered.name == "InterruptionFrame#42"


def test_deserialize_empty_submessages_give_default_frames() -> None:
    text = PROTO.deserialize(b"\x0a\x00")
    assert type(text) is TextFrame
    assert text.text == ""
    interruption = PROTO.deserialize(b"\x2a\x00")
    assert type(interruption) is InterruptionFrame
    assert interruption.name == f"InterruptionFrame#{interruption.id}"


def test_deserialize_audio_ignores_pts() -> None:
    # pts (field 6, varint: 0x30) = 99, after the rate (16000) and channels (1).
    frame = PROTO.deserialize(b"\x12\x07\x20\x80\x7d\x28\x01\x30\x63")
    assert frame == InputAudioRawFrame(audio=b"", sample_rate=16000, num_channels=1)


def test_deserialize_audio_with_partial_sample_passes_through() -> None:
    # 3 bytes is not a whole number of 16-bit samples: the core's audio path deals with it.
    frame = PROTO.deserialize(b"\x12\x0a\x1a\x03abc\x20\x80\x7d\x28\x01")
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == b"abc"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty message"),
        pytest.param(b"\x32\x00", id="unknown oneof field 6"),
        pytest.param(b"\x38\x01", id="unknown varint field 7"),
    ],
)
def test_deserialize_frame_without_known_kind_gives_none(data: bytes) -> None:
    assert PROTO.deserialize(data) is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(b"\x0a\x09\x08\x01", "valid protobuf", id="truncated"),
        pytest.param(b"\x0f", "valid protobuf", id="bad wire type"),
        pytest.param(b"\x0a\x03\x1a\x01\xff", "valid protobuf", id="invalid utf-8 string"),
        pytest.param(b"\x00", "valid protobuf", id="field number 0"),
        pytest.param(b"\x12\x02\x28\x01", "sample_rate=0", id="audio rate 0"),
        pytest.param(b"\x12\x03\x20\x80\x7d", "num_channels=0", id="audio channels 0"),
        pytest.param(b"\x12\x00", "positive", id="audio empty"),
        pytest.param(b"\x22\x03\x0a\x01{", "JSON", id="message not JSON"),
        pytest.param(b"\x22\x00", "JSON", id="message empty"),
    ],
)
def test_deserialize_bad_bytes_raise_serialization_error(data: bytes, match: str) -> None:
    with pytest.raises(SerializationError, match=match):
        PROTO.deserialize(data)


def test_deserialize_deeply_nested_json_raises_serialization_error() -> None:
    data = pb.Frame(message=pb.MessageFrame(data="[" * 200_000)).SerializeToString()
    with pytest.raises(SerializationError, match="JSON"):
        PROTO.deserialize(data)


def test_deserialize_text_message_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="binary"):
        PROTO.deserialize('{"type": "client-ready"}')


# --------------------------------------------------------------------------------------------
# Round trips and fuzzing

ids = st.integers(min_value=1, max_value=UINT64_MAX)
names = st.text(min_size=1, max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(id_=ids, name=names, text=st.text())
def test_text_round_trip(id_: int, name: str, text: str) -> None:
    frame = TextFrame(id=id_, name=name, text=text)
    _assert_same_frame(PROTO.deserialize(PROTO.serialize(frame) or b"?"), frame)


@given(
    cls=st.sampled_from(AUDIO_TYPES),
    id_=ids,
    name=names,
    audio=st.binary(max_size=64),
    sample_rate=st.integers(min_value=1, max_value=UINT32_MAX),
    num_channels=st.integers(min_value=1, max_value=UINT32_MAX),
)
def test_audio_round_trip(
    cls: type[AudioRawFrame],
    id_: int,
    name: str,
    audio: bytes,
    sample_rate: int,
    num_channels: int,
) -> None:
    sent = cls(id=id_, name=name, audio=audio, sample_rate=sample_rate, num_channels=num_channels)
    expected = InputAudioRawFrame(
        id=id_, name=name, audio=audio, sample_rate=sample_rate, num_channels=num_channels
    )
    _assert_same_frame(PROTO.deserialize(PROTO.serialize(sent) or b"?"), expected)


@given(id_=ids, name=names, text=st.text(), user_id=st.text(), timestamp=st.text())
def test_transcription_round_trip(
    id_: int, name: str, text: str, user_id: str, timestamp: str
) -> None:
    frame = TranscriptionFrame(id=id_, name=name, text=text, user_id=user_id, timestamp=timestamp)
    _assert_same_frame(PROTO.deserialize(PROTO.serialize(frame) or b"?"), frame)


@given(id_=ids, name=names)
def test_interruption_round_trip(id_: int, name: str) -> None:
    frame = InterruptionFrame(id=id_, name=name)
    _assert_same_frame(PROTO.deserialize(PROTO.serialize(frame) or b"?"), frame)


@given(cls=st.sampled_from(MESSAGE_TYPES), message=json_values)
def test_message_round_trip(cls: type[OutputTransportMessageFrame], message: Any) -> None:
    data = PROTO.serialize(cls(message=message))
    assert isinstance(data, bytes)
    frame = PROTO.deserialize(data)
    assert type(frame) is InputTransportMessageFrame
    assert frame.message == message


def _sample_frames() -> st.SearchStrategy[Frame]:
    return st.one_of(
        st.builds(TextFrame, text=st.text()),
        st.builds(
            OutputAudioRawFrame,
            audio=st.binary(max_size=16),
            sample_rate=st.integers(1, 48000),
            num_channels=st.integers(1, 8),
        ),
        st.builds(TranscriptionFrame, text=st.text(), user_id=st.text(), timestamp=st.text()),
        st.builds(OutputTransportMessageFrame, message=json_values),
        st.builds(InterruptionFrame),
    )


@st.composite
def _damaged_protobuf(draw: st.DrawFn) -> bytes:
    """A valid encoding with one byte changed, and possibly cut short or extended."""
    # A fixed id and name: the process-wide frame counter must not change the encoding's
    # length between hypothesis's runs of one example (FlakyStrategyDefinition).
    frame = dataclasses.replace(draw(_sample_frames()), id=1, name="sample")
    data = bytearray(PROTO.serialize(frame) or b"")
    position = draw(st.integers(0, len(data) - 1))
    data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=4))


def _check_outcome(serializer: FrameSerializer, data: bytes | str) -> None:
    try:
        result = serializer.deserialize(data)
    except SerializationError:
        return
    assert result is None or isinstance(result, Frame)


@given(data=st.one_of(st.binary(), st.text(), _damaged_protobuf()))
def test_protobuf_deserialize_anything_gives_frame_none_or_serialization_error(
    data: bytes | str,
) -> None:
    _check_outcome(PROTO, data)


@given(data=st.one_of(st.binary(), st.text()))
def test_raw_deserialize_anything_gives_frame_none_or_serialization_error(
    data: bytes | str,
) -> None:
    _check_outcome(RAW, data)


@given(frame=_sample_frames())
def test_serialize_is_deterministic(frame: Frame) -> None:
    assert PROTO.serialize(frame) == PROTO.serialize(frame)


# --------------------------------------------------------------------------------------------
# Raw


def test_raw_defaults() -> None:
    assert (RAW.sample_rate, RAW.num_channels) == (16000, 1)
    assert repr(RAW) == "RawFrameSerializer(sample_rate=16000, num_channels=1)"
    stereo = RawFrameSerializer(sample_rate=48000, num_channels=2)
    assert (stereo.sample_rate, stereo.num_channels) == (48000, 2)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "16000", None])
@pytest.mark.parametrize("arg", ["sample_rate", "num_channels"])
def test_raw_rejects_bad_constructor_args(arg: str, bad: Any) -> None:
    # Any: the non-int values deliberately break the annotations.
    with pytest.raises(ValueError, match=arg):
        RawFrameSerializer(**{arg: bad})


def test_raw_deserialize_binary_is_audio_at_the_configured_format() -> None:
    serializer = RawFrameSerializer(sample_rate=8000, num_channels=2)
    frame = serializer.deserialize(b"\x01\x00\x02\x00")
    assert type(frame) is InputAudioRawFrame
    assert frame == InputAudioRawFrame(audio=b"\x01\x00\x02\x00", sample_rate=8000, num_channels=2)


def test_raw_deserialize_copies_a_bytearray_into_bytes() -> None:
    frame = RAW.deserialize(bytearray(b"\x01\x00"))  # type: ignore[arg-type]
    assert isinstance(frame, InputAudioRawFrame)
    assert type(frame.audio) is bytes


def test_raw_deserialize_partial_sample_passes_through() -> None:
    frame = RAW.deserialize(b"\x01")
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == b"\x01"


def test_raw_deserialize_empty_binary_is_ignored() -> None:
    assert RAW.deserialize(b"") is None


def test_raw_deserialize_text_is_a_json_message() -> None:
    frame = RAW.deserialize('{"type": "hello", "n": [1, 2]}')
    assert type(frame) is InputTransportMessageFrame
    assert frame.message == {"type": "hello", "n": [1, 2]}


@pytest.mark.parametrize("text", ["", "{", "hello", "[" * 200_000])
def test_raw_deserialize_bad_json_raises_serialization_error(text: str) -> None:
    with pytest.raises(SerializationError, match="JSON"):
        RAW.deserialize(text)


@pytest.mark.parametrize("cls", AUDIO_TYPES)
def test_raw_serialize_audio_is_its_bytes(cls: type[AudioRawFrame]) -> None:
    assert RAW.serialize(cls(audio=AUDIO_PCM, sample_rate=16000)) == AUDIO_PCM


@pytest.mark.parametrize(
    ("sample_rate", "num_channels"), [(24000, 1), (16000, 2), (8000, 2)], ids=str
)
def test_raw_serialize_audio_in_another_format_raises(sample_rate: int, num_channels: int) -> None:
    frame = OutputAudioRawFrame(audio=AUDIO_PCM, sample_rate=sample_rate, num_channels=num_channels)
    with pytest.raises(SerializationError, match="sample_rate=16000, num_channels=1"):
        RAW.serialize(frame)


@pytest.mark.parametrize("cls", MESSAGE_TYPES)
def test_raw_serialize_message_is_json_text(cls: type[OutputTransportMessageFrame]) -> None:
    assert RAW.serialize(cls(message={"a": [1, "é"]})) == '{"a": [1, "\\u00e9"]}'


def test_raw_serialize_unencodable_message_raises() -> None:
    with pytest.raises(SerializationError, match="JSON"):
        RAW.serialize(OutputTransportMessageFrame(message={"x": math.nan}))


@pytest.mark.parametrize(
    "frame",
    [
        TextFrame(text="hi"),
        TranscriptionFrame(text="hi", user_id="u", timestamp="t"),
        InterruptionFrame(),
        EndFrame(),
        CancelFrame(),
        InputTransportMessageFrame(message=1),
    ],
    ids=repr,
)
def test_raw_serialize_unsent_kinds_give_none(frame: Frame) -> None:
    assert RAW.serialize(frame) is None


@given(audio=st.binary(min_size=1))
def test_raw_audio_round_trip(audio: bytes) -> None:
    data = RAW.serialize(OutputAudioRawFrame(audio=audio, sample_rate=16000))
    assert data == audio
    assert RAW.deserialize(audio) == InputAudioRawFrame(audio=audio, sample_rate=16000)


@given(cls=st.sampled_from(MESSAGE_TYPES), message=json_values)
def test_raw_message_round_trip(cls: type[OutputTransportMessageFrame], message: Any) -> None:
    data = RAW.serialize(cls(message=message))
    assert isinstance(data, str)
    assert json.loads(data) == message
    frame = RAW.deserialize(data)
    assert type(frame) is InputTransportMessageFrame
    assert frame.message == message


# --------------------------------------------------------------------------------------------
# JSON helpers


def test_dumps_message_matches_json_dumps() -> None:
    message = {"type": "bot-ready", "data": {"version": "1.0", "n": [1, 2.5, None, True]}}
    assert dumps_message(message) == json.dumps(message)


def test_loads_message_accepts_any_json_value() -> None:
    assert loads_message("3") == 3
    assert loads_message('"x"') == "x"


def test_subclasses_are_sent_as_their_closest_known_kind() -> None:
    text = PROTO.deserialize(PROTO.serialize(_MyTextFrame(text="x")) or b"")
    assert type(text) is TextFrame and text.text == "x"
    audio = PROTO.deserialize(
        PROTO.serialize(_MyAudioFrame(audio=b"\x01\x00", sample_rate=8000)) or b""
    )
    assert isinstance(audio, InputAudioRawFrame) and audio.sample_rate == 8000
    assert RAW.serialize(_MyAudioFrame(audio=b"\x01\x00", sample_rate=16000)) == b"\x01\x00"
