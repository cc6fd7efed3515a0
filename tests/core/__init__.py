"""Tests of lib/core/."""
