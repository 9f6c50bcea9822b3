"""Calibration sets and INT8 (QDQ) quantisation of ONNX models."""
