"""Tests of lib/experiments/."""
