"""Serving job of the image classifier: what the serving image runs as `serve`.

`serve` (see `server.py`) starts multi-model-server with `handler_service.handle` as the
model's entry point; `handler.py` holds the four SageMaker inference functions.
"""
