"""Tests that run the command-line entry points end to end (main_block_three_tier.py, scripts/, dense_ft/, the wheel)."""
