"""The sans-IO core: bytes and the current time in; bytes to write, events and deadlines out."""
