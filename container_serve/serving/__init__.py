"""Serving job of the image classifier: what the serving image runs as `serve`.

`serve` (server.py) starts multi-model-server with `entry.handle` as the model's entry
point; it calls handler_service.py, which runs the four SageMaker inference functions of
handler.py with the decoders and encoders of codecs.py. contract.py holds every
environment name `serve` reads.
"""
