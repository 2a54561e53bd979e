"""Errors in what a run reads (weights, data, reports): the message names the file and what is wrong.

They are ``ValueError``s, not ``FileNotFoundError``s: a file that is present but unusable fails the item (it is
never skipped as "missing"), and the plugin and the CLI print the message alone, without a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """A file the run reads is unusable; ``str()`` names the file and the problem."""


class WeightsError(InputError):
    """A weights file that is empty, truncated, damaged, or not a PyTorch checkpoint."""


class DataError(InputError):
    """A data file (image, label CSV, IDX) that is damaged, too large, or points outside the data root."""
