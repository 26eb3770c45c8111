"""Training job of the image classifier: what the training image runs as `train`."""
