"""Layer `core`: what every other layer shares and nothing in `lib` below it.

Command-line plumbing (cli), the output rule (outputs, markers, files: THE atomic writer, locks,
temporaries, write faults), JSON results and run metadata (results), the one registry rule
(registry), statistics in pure NumPy (uncertainty), the toolkit's directories and their environment
variables (paths), the safetensors header check (safetensors_header) and the error classes several
layers raise (errors). Imports nothing from `lib` outside `lib.core`.
"""
