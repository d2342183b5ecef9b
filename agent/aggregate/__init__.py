"""Per-process aggregates over time windows, and the diagnoses drawn from them.

Pure code: the clock is passed in, nothing here touches the kernel.
"""
