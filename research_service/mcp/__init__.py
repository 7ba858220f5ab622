"""The MCP server: research-service as tools, resources and a prompt for AI assistants."""
