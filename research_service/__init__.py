"""research-service: deep research over one Server-Sent Events stream."""

__version__ = "0.1.0"
