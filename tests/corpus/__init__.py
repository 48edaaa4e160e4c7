"""Real-world domain XML corpora (fetched, never committed) and the coverage measurement."""
