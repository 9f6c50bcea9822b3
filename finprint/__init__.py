"""finprint: recognise individual fish on edge hardware."""

__version__ = "0.1.0"
