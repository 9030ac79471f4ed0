"""Reproducible speed measurements of cxr-toolkit: ``python -m benchmarks --help``.

Every measurement interleaves the variants it compares (round-robin repeats) so that load from
other processes hits all of them alike, and reports the median and interquartile range. The
inference-only measurements need nothing beyond ``pip install .``; those that compare against
PyTorch run when torch is installed and say why they were skipped otherwise.
"""
