"""The HTTP API. Validates specs, stores rows, enqueues ids. Never imports TensorFlow."""
