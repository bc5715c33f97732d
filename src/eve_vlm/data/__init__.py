"""Data side: image loading/resizing, conversation templates and the processor."""

from .image import EveImageProcessor, ImageError, load_image, target_size
from .processor import IGNORE_INDEX, EveProcessor
from .templates import IMAGE_TOKEN, ConversationError, render

__all__ = ["IGNORE_INDEX", "IMAGE_TOKEN", "ConversationError", "EveImageProcessor", "EveProcessor",
           "ImageError", "load_image", "render", "target_size"]
