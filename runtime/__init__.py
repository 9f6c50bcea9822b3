"""The on-device runtime. Torch-free: numpy, OpenCV and the engine it is told to use."""
