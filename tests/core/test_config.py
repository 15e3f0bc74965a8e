"""Bad configuration is refused at construction with an error naming the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from wavewire.core.config import ClientConfig, ServerConfig
from wavewire.core.errors import HandshakeRejected
from wavewire.core.events import ConnectionId, ConnectionInfo
from wavewire.core.frames import InputAudioRawFrame, OutputAudioRawFrame
from wavewire.core.protocol.connection import check_close


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_message_size", 0),
        ("max_message_size", True),
        ("max_message_size", 1.5),
        ("max_head_size", -1),
        ("max_fragments", 0),
        ("open_timeout", 0),
        ("close_timeout", -1.0),
        ("ping_interval", math.inf),
        ("ping_timeout", math.nan),
        ("ping_timeout", "20"),
        ("session_timeout", False),
        ("client_policy", "share"),
    ],
)
def test_server_config_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        ServerConfig(**{field: value})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"allowed_origins": "https://a.example"}, TypeError),
        ({"subprotocols": "chat"}, TypeError),
        ({"serializer": object()}, TypeError),
    ],
)
def test_server_config_rejects_bad_types(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ServerConfig(**kwargs)


def test_server_config_defaults_and_normalisation() -> None:
    config = ServerConfig(allowed_origins=["https://a.example", None], subprotocols=["x"])
    assert config.allowed_origins == ("https://a.example", None)
    assert config.subprotocols == ("x",)
    assert (config.max_message_size, config.max_head_size) == (1 << 20, 16 * 1024)
    assert (config.open_timeout, config.close_timeout) == (10.0, 10.0)
    assert (config.ping_interval, config.ping_timeout) == (20.0, 20.0)
    assert (config.client_policy, config.session_timeout) == ("replace", None)
    assert ServerConfig(ping_interval=None, open_timeout=None).ping_interval is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"additional_headers": {"X-A": "b\r\nEvil: 1"}}, ValueError, "CR, LF or NUL"),
        ({"additional_headers": [("X-A", "b\nc")]}, ValueError, "CR, LF or NUL"),
        ({"additional_headers": {"X-A": "b\0"}}, ValueError, "CR, LF or NUL"),
        ({"additional_headers": {"Bad Name": "v"}}, ValueError, "invalid header name"),
        ({"additional_headers": {"": "v"}}, ValueError, "invalid header name"),
        ({"additional_headers": {b"X": "v"}}, TypeError, "name must be a str"),
        ({"additional_headers": {"X": 1}}, TypeError, "must be a str"),
        ({"origin": "https://a\r\n"}, ValueError, "CR, LF or NUL"),
        ({"user_agent": "x\ny"}, ValueError, "CR, LF or NUL"),
        ({"subprotocols": "chat"}, TypeError, "sequence"),
        ({"max_rejection_body": -1}, ValueError, "max_rejection_body"),
        ({"additional_headers": {"Sec-WebSocket-Key": "x"}}, ValueError, "set by the handshake"),
        ({"additional_headers": {"host": "evil"}}, ValueError, "set by the handshake"),
        ({"additional_headers": {"Origin": "https://a"}}, ValueError, "origin="),
    ],
)
def test_client_config_refuses_what_must_never_be_sent(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ClientConfig(**kwargs)


def test_client_config_headers_from_mapping_or_pairs() -> None:
    assert ClientConfig(additional_headers={"A": "1"}).headers == (("A", "1"),)
    assert ClientConfig(additional_headers=[("A", "1"), ("A", "2")]).headers == (
        ("A", "1"),
        ("A", "2"),
    )
    assert ClientConfig().headers == ()
    assert ClientConfig(max_rejection_body=0).max_rejection_body == 0


@pytest.mark.parametrize(("code", "ok"), [(1000, True), (1005, False), (1006, False),
                                          (1015, False), (2999, False), (3000, True),
                                          (4999, True), (5000, False), (1014, True)])  # fmt: skip
def test_sendable_close_codes(code: int, ok: bool) -> None:
    if ok:
        check_close(code, "")
    else:
        with pytest.raises(ValueError, match="may not be sent"):
            check_close(code, "")


def test_close_reason_is_at_most_123_bytes() -> None:
    check_close(1000, "é" * 61 + "x")  # 123 bytes
    with pytest.raises(ValueError, match="123 bytes"):
        check_close(1000, "é" * 62)


def test_audio_frames_validate_and_count_samples() -> None:
    frame = OutputAudioRawFrame(audio=b"\0" * 640, sample_rate=16000, num_channels=2)
    assert frame.num_frames == 160
    assert "640 bytes" in repr(frame)
    assert "640 bytes" in repr(InputAudioRawFrame(audio=b"\0" * 640, sample_rate=8000))
    with pytest.raises(ValueError, match="sample_rate"):
        OutputAudioRawFrame(audio=b"", sample_rate=0)
    with pytest.raises(ValueError, match="num_channels"):
        OutputAudioRawFrame(audio=b"", sample_rate=16000, num_channels=0)


def test_connection_info_header_lookup_and_rejection_error() -> None:
    info = ConnectionInfo(id=ConnectionId(1), headers=(("x-token", "a"), ("x-token", "b")))
    assert info.header("X-Token") == "a"
    assert info.header("missing") is None
    error = HandshakeRejected(401, [("www-authenticate", "Bearer")], b"no")
    assert (error.status_code, error.headers, error.body) == (
        401,
        (("www-authenticate", "Bearer"),),
        b"no",
    )
    assert "401" in str(error)


def test_audio_out_config_is_validated_on_creation() -> None:
    from wavewire.core.config import AudioOutConfig

    with pytest.raises(ValueError, match="sample_rate"):
        AudioOutConfig(sample_rate=50)
    with pytest.raises(ValueError, match="chunks_10ms"):
        AudioOutConfig(chunks_10ms=0)
    assert AudioOutConfig(sample_rate=16000).sample_rate == 16000
