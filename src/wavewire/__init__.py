"""wavewire: real-time audio and data over WebSockets."""
