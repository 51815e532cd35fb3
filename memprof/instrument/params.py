"""Counting a model's parameters: below the instrument, the methods and the CLI, which all count.
The count is meft's (``meft.peft_api.count_parameters``: MEFTModel's peft-style count uses it), the
layer below everything."""

from __future__ import annotations

from meft.peft_api import count_parameters as count_params

__all__ = ["count_params"]
