"""Offline training, testing and evaluation on the DIFF-MF core."""
