"""Serving container of the image classifier: what the serving image runs as `serve`.

`serve` (server.py) checks the model directory, starts multi-model-server's Java frontend
with this package's extension (frontend.py, java/) next to a process that has imported
torch and the handler (preload.py), and supervises both; handler.py is the one handler
(load, then decode -> predict -> encode per server batch) with the decoders and encoders of
codecs.py; contract.py holds every environment name `serve` reads.
"""
