"""Registers the lmms-eval model ``eve_vlm`` (entry point group ``lmms_eval.models`` in pyproject.toml).

lmms-eval calls :func:`model_manifest` while it builds its model registry, for every run; this
module therefore imports nothing heavy, and the model class (``eve_vlm.eval.lmms_plugin``) is only
imported when ``--model eve_vlm`` is asked for.
"""

from __future__ import annotations

from typing import Any

MODEL_ID = "eve_vlm"
CHAT_CLASS_PATH = "eve_vlm.eval.lmms_plugin.EveLmms"
SIMPLE_CLASS_PATH = "eve_vlm.eval.lmms_plugin.EveLmmsSimple"


def model_manifest() -> Any:
    """lmms-eval's ``ModelManifest`` for ``eve_vlm``: the chat class by default, the simple (legacy)
    one with ``--force_simple``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(
        model_id=MODEL_ID, chat_class_path=CHAT_CLASS_PATH, simple_class_path=SIMPLE_CLASS_PATH
    )
