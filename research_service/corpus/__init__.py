"""What the local search provider searches: corpus sources and their SQLite full-text index."""
