"""Generated from proto/persona/ by `python -m serving.proto_codegen`; do not edit."""
