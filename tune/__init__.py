"""Scoring the daemon's chain against ground truth, and tuning the open-set rule and the tracker on labelled
farm video. Torch-free, but not what the edge box runs: it imports `finprint.runtime`, never the reverse."""
