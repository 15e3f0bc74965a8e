"""The session layer: adoption, policies, session timers, outbound audio and messages,
inbound deserialization. It never sees bytes of the wire."""
