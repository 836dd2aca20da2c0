"""Generated from proto/persona/v1/ by `python -m serving.proto_codegen`; do not edit."""
