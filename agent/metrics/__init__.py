"""The agent's view of itself: CPU, memory, counters, and their exporters."""
