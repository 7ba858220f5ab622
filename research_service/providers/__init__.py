"""LLM and search providers behind small Protocols, one module per backend."""
