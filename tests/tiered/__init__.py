"""Tests of lib/tiered/."""
