"""Datasets: the synthetic farm generator and loaders for YOLO, COCO and re-ID crop folders.

Torch-free (numpy + OpenCV), so `finprint data ...` runs on any machine.
"""

from finprint.data.loaders import detect_format, load_detection
from finprint.data.reid import load_reid
from finprint.data.splits import split_by_group

__all__ = ["detect_format", "load_detection", "load_reid", "split_by_group"]
