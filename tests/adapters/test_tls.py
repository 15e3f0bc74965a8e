"""wss:// for the client transport, with a certificate authority made in the test
(``trustme``): the client that trusts it talks, one that does not fails with a clear error.

TLS is served two ways: by a TLS terminator (anyio's ``TLSListener`` piping to a plain wavewire
server, as a reverse proxy would), and by wavewire's server transport with ``ssl_context``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
import trustme
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSListener

from wavewire import (
    ConnectError,
    OutputAudioRawFrame,
    TextFrame,
    WebsocketClientTransport,
    WebsocketServerTransport,
)
from wavewire.cli import echo

from .client_support import ClientRecorder, client_params
from .support import LIMIT, Recorder, echo_server, make_params

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def trusting_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


async def pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
    try:
        async for data in source:
            await sink.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        await anyio.aclose_forcefully(sink)


@asynccontextmanager
async def tls_terminator(context: ssl.SSLContext, backend_port: int) -> AsyncIterator[int]:
    """Accepts TLS on 127.0.0.1 and pipes the plain bytes to ``backend_port``; yields its port."""

    async def handle(client: anyio.abc.ByteStream) -> None:
        try:
            backend = await anyio.connect_tcp("127.0.0.1", backend_port)
        except OSError:
            await anyio.aclose_forcefully(client)
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipe, client, backend)
            tg.start_soon(pipe, backend, client)

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = tcp.extra(SocketAttribute.local_port)
    listener = TLSListener(tcp, context, standard_compatible=False)

    async def serve() -> None:
        # A failed TLS handshake (the untrusting client) ends one connection, not the server.
        await listener.serve(handle)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(serve)
        yield port
        tg.cancel_scope.cancel()


async def test_wss_through_a_tls_terminator(
    authority: trustme.CA, server_context: ssl.SSLContext
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            echo_server() as (server, server_events),
            tls_terminator(server_context, server.port) as port,
        ):
            params = client_params(ssl_context=trusting_context(authority))
            for host in ("127.0.0.1", "localhost"):  # IP and DNS names, both checked
                client = WebsocketClientTransport(f"wss://{host}:{port}/tls", params)
                events = ClientRecorder(client)
                async with client:
                    await client.output().send(TextFrame(text=f"secret for {host}"))
                    reply = await client.input().receive()
                    assert isinstance(reply, TextFrame) and reply.text == f"secret for {host}"
                assert events.names() == ["on_connected", "on_disconnected"]
                (connection,) = events.args("on_disconnected")[0]
                assert connection.disconnect.code == 1000
            await server_events.wait("on_client_disconnected", 2)
            assert server_events.handles[0].path == "/tls"


async def test_untrusted_certificate_fails_with_a_clear_error(
    server_context: ssl.SSLContext,
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            echo_server() as (server, server_events),
            tls_terminator(server_context, server.port) as port,
        ):
            # The default context: the system's authorities, which never heard of this one.
            client = WebsocketClientTransport(f"wss://127.0.0.1:{port}/", client_params())
            with pytest.raises(ConnectError) as caught:
                async with client:
                    pytest.fail("connected to a server with an untrusted certificate")
            message = str(caught.value)
            assert message.startswith(f"TLS with 127.0.0.1:{port} failed: ")
            assert "certificate verify failed" in message
            assert isinstance(caught.value, OSError)
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            assert server_events.count("on_client_connected") == 0


async def test_wss_echo_with_wavewire_server_ssl_context(
    authority: trustme.CA, server_context: ssl.SSLContext
) -> None:
    server = WebsocketServerTransport(
        make_params(ssl_context=server_context), host="127.0.0.1", port=0
    )
    server_events = Recorder(server)
    with anyio.fail_after(LIMIT):
        async with server, anyio.create_task_group() as tg:
            tg.start_soon(echo, server.input(), server.output())
            params = client_params(ssl_context=trusting_context(authority))
            client = WebsocketClientTransport(f"wss://127.0.0.1:{server.port}/tls", params)
            events = ClientRecorder(client)
            async with client:
                await client.output().send(TextFrame(text="secret"))
                reply = await client.input().receive()
                assert isinstance(reply, TextFrame) and reply.text == "secret"
                audio = bytes(range(256)) * 5  # one whole 40 ms output chunk
                await client.output().send(OutputAudioRawFrame(audio=audio, sample_rate=16000))
                echoed = await client.input().receive()
                assert getattr(echoed, "audio", None) == audio
            assert events.names() == ["on_connected", "on_disconnected"]
            (connection,) = events.args("on_disconnected")[0]
            assert connection.disconnect.code == 1000
            await server_events.wait("on_client_disconnected")
            assert server_events.handles[0].path == "/tls"
            tg.cancel_scope.cancel()
