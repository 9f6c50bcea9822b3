"""Distillation runs (torch): models, losses, training, evaluation.

Importing this package does not import torch; its modules do.
"""
