"""HTTP layer: handlers, the SSE stream, problem+json errors."""
