"""Code shared by the API and the worker: configuration, Redis layout, stream messages, errors."""
