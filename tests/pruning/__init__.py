"""Tests of lib/pruning/."""
