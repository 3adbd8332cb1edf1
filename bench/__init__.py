"""genstream's benchmark suite: ``make bench`` (``python -m bench``); see bench/README.md.

Every figure is measured beside its reference in the same run (same machine, same minute,
interleaved repetitions), because the machines this runs on are shared and noisy: what is
reported is a distribution over repetitions (min / median / max) and ratios to the reference,
never a lone number. Nothing here asserts a timing.
"""
