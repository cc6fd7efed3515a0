"""Tests of lib/models/."""
