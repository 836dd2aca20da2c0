"""Scripts a backend engineer can copy to call persona-engine from their own service."""
