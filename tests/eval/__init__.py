"""Tests of lib/eval/."""
