"""Wanda hybrid pruning toolkit: three-tier block pruning, task calibration, fine-tuning, evaluation."""
