"""Serving container of the image classifier: what the serving image runs as `serve`.

`serve` (server.py) checks the model directory, starts multi-model-server with
`entry.handle` as the workers' entry point and supervises it; handler.py is the one
handler (load, then decode -> predict -> encode per server batch) with the decoders and
encoders of codecs.py; contract.py holds every environment name `serve` reads.
"""
