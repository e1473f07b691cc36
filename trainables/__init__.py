"""Data, backbones and the Ray Tune trainable of the transfer-learning study service."""
