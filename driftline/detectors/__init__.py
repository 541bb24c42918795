"""Drift detectors: PSI, KS, distances, MMD, sequential and outlier detectors, thresholds."""
