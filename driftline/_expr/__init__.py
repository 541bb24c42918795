"""The expression language, split by concern; the public face is :mod:`driftline.expressions`."""
