"""Datasets: the synthetic farm generator and loaders for YOLO, COCO and re-ID crop folders.

Torch-free (numpy + OpenCV), so `finprint data ...` runs on any machine.
"""
