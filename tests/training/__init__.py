"""Tests of lib/training/."""
