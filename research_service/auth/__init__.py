"""API keys, the signing secret, and the signed stream tokens and sessions made with it."""
