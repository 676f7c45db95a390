"""Serve one or more variants of a model behind an OpenAI-compatible HTTP API, with A/B traffic splits and logs."""
