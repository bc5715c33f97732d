"""Checkpoint conversion: the reference EVE checkpoints (spec section 9) to and from eve-vlm."""

from .official import CheckpointMismatchError, ConversionSummary, convert_official, export_official

__all__ = ["CheckpointMismatchError", "ConversionSummary", "convert_official", "export_official"]
