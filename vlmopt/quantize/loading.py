"""Inspect and load the bf16 model folder. VLMs are loaded with their own class, as llm-compressor's VLM examples
do: `oneshot(model="<path>")` would use AutoModelForCausalLM, which refuses LLaVA/Qwen2-VL configs in
transformers 5."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import QuantizeInputError, describe_exception
from .ignore_rules import looks_multimodal
from .safetensors_index import checkpoint_tensors, weights_bytes


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    config: dict[str, Any]
    architecture: str
    model_type: str
    weights_bytes: int
    is_multimodal: bool

    @property
    def name(self) -> str:
        return self.path.name


def inspect_model_dir(path: Path) -> ModelFolder:
    """Check that `path` is a local transformers checkpoint with safetensors weights; read its config."""
    path = Path(path).expanduser()
    if not path.exists():
        raise QuantizeInputError(f"MODEL_DIR {path}: no such folder")
    if not path.is_dir():
        raise QuantizeInputError(f"MODEL_DIR {path}: not a folder")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise QuantizeInputError(f"MODEL_DIR {path}: not a model folder (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QuantizeInputError(f"{config_path}: not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not config.get("model_type"):
        raise QuantizeInputError(f"{config_path}: no model_type; not a transformers model folder")
    if not list(path.glob("*.safetensors")):
        raise QuantizeInputError(f"MODEL_DIR {path}: no *.safetensors weights (pytorch .bin is not supported)")
    try:
        checkpoint_tensors(path)
    except (OSError, ValueError) as exc:
        raise QuantizeInputError(f"MODEL_DIR {path}: unreadable safetensors: {exc}") from exc
    qc = config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")
    if qc:
        raise QuantizeInputError(f"MODEL_DIR {path}: already quantized ({qc.get('quant_method', '?')}); "
                                 "start from the bf16/fp16 model")
    return ModelFolder(
        path=path.resolve(),
        config=config,
        architecture=(config.get("architectures") or [config["model_type"]])[0],
        model_type=str(config["model_type"]),
        weights_bytes=weights_bytes(path),
        is_multimodal=looks_multimodal(config),
    )


def load_processor(folder: ModelFolder) -> Any:
    """The model's processor (VLM) or tokenizer (text-only), offline."""
    from transformers import AutoProcessor, AutoTokenizer

    try:
        if folder.is_multimodal:
            return AutoProcessor.from_pretrained(folder.path, local_files_only=True)
        return AutoTokenizer.from_pretrained(folder.path, local_files_only=True)
    except Exception as exc:  # transformers raises many types here; the user needs one line
        raise QuantizeInputError(f"MODEL_DIR {folder.path}: cannot load its processor/tokenizer: "
                                 f"{describe_exception(exc)}") from exc


def load_model(folder: ModelFolder) -> Any:
    """bf16 model with its own class (`LlavaForConditionalGeneration`, ...), else the Auto class for its kind."""
    import torch
    import transformers

    cls = getattr(transformers, folder.architecture, None)
    if cls is None:
        cls = transformers.AutoModelForImageTextToText if folder.is_multimodal else transformers.AutoModelForCausalLM
    try:
        model = cls.from_pretrained(folder.path, dtype=torch.bfloat16, local_files_only=True)
    except Exception as exc:
        raise QuantizeInputError(f"MODEL_DIR {folder.path}: transformers cannot load it as {cls.__name__}: "
                                 f"{describe_exception(exc)}") from exc
    return model.eval()


def image_token_id(folder: ModelFolder, processor: Any) -> int | None:
    for key in ("image_token_id", "image_token_index"):
        if isinstance(folder.config.get(key), int):
            return int(folder.config[key])
    token_id = getattr(processor, "image_token_id", None)
    return int(token_id) if isinstance(token_id, int) else None
