"""torch -> ONNX (+ manifest), fp16 conversion, parity checks, TensorRT engine building."""
