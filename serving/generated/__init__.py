"""Generated from proto/ by `python -m serving.proto_codegen`; do not edit."""
