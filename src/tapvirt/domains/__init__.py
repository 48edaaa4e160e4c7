"""Guest lifecycle: definitions store, start/stop, the per-guest supervisor, state."""
