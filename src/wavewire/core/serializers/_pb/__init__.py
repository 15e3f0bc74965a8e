"""Generated protobuf code for Pipecat's frames.proto (regenerate with scripts/gen_protos.py)."""
