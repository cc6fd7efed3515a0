"""Tests of lib/data/."""
