"""The protocol layer: the opening handshake, framing and one connection's state machine
(bytes <-> messages, RFC 6455). It knows nothing of sessions."""
