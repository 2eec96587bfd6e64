"""Model architectures: the shapes memory fit and performance estimates need, from a bundled spec or config.json.

Bundled specs live in vlmopt/data/models/<id>.yaml (shapes copied from each model's public config.json; the file names
its source). A model folder is read from its config.json (and preprocessor_config.json when present), so the tiny
test model and any local checkpoint work without a bundled spec.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from vlmopt.paths import data_files
from vlmopt.schemas.common import ContractError, StrictModel, format_validation_error


@dataclass(frozen=True)
class ImageEncoding:
    """What one image of a given size costs the model.

    tokens: what the image adds to the sequence the decoder attends to (placeholders, tile tags and row breaks
    included), i.e. usage.prompt_tokens with the image minus without it; for Llama 3.2 Vision the tokens its
    cross-attention layers attend to instead (`ImageTokenRule.in_decoder_sequence` is False).
    encoder_patches: patches the vision encoder runs over, summed over every tile or crop it sees (before any
    merge, pooling or pixel shuffle): this, not `tokens`, sets the encoder's FLOPs.
    tiles: separate encoder inputs (crops, tiles and thumbnails); attention is quadratic within each.
    """

    tokens: int
    encoder_patches: int
    tiles: int = 1

    @property
    def patches_per_tile(self) -> float:
        return self.encoder_patches / max(self.tiles, 1)


class ImageTokenRule(StrictModel):
    """How many tokens one image becomes, and how many patches the vision encoder sees, as a function of its size.

    Every kind follows the model's own image processor in transformers 5.x; tests/integration/
    test_image_token_rules.py runs those processor classes on images of several sizes and compares.

    kinds:
    - fixed: always `tokens_per_image` (LLaVA-1.5: 576 = (336/14)^2; Gemma 3 with pan-and-scan off: 256 soft tokens
      + begin/end-of-image + two "\n\n" = 260). The encoder sees one resized image (`encoder_patches` of it).
    - smart_resize: Qwen2-VL / Qwen2.5-VL. The image is resized to multiples of patch_size*merge_size within
      [min_pixels, max_pixels], then every merge_size x merge_size block of patches is one token.
    - patch_rows: Pixtral / Mistral 3. Scaled down to fit max_image_size, one token per (merged) patch plus one
      break/end token per row of patches.
    - pan_and_scan: Gemma 3 with pan-and-scan on: tokens_per_image for the whole image plus as many again per
      crop; with it off (vLLM's default) it is `fixed`.
    - tiles: Llama 3.2 Vision. The image is fitted to the best canvas of at most max_tiles tile_size tiles;
      tokens_per_tile each; these tokens feed cross-attention layers, not the decoder's sequence.
    - anyres: LLaVA-NeXT / LLaVA-OneVision. The image is fitted to the best of `grid_pinpoints` resolutions and cut
      into tile_size crops, plus one base crop of the whole image; the crops' features are unpadded back to the
      image's aspect ratio, with one newline token per feature row. `tokens_per_tile` is the base crop's tokens;
      OneVision (`anyres_max_tiles`, "anyres_max_9") shrinks the feature grid beyond that many crops' worth.
    - idefics3: Idefics3 / SmolVLM. The image is resized so its longest edge is `longest_edge` (up or down), split
      into tile_size tiles, plus a global tile; each tile gives `tokens_per_tile` tokens after pixel shuffle, plus
      tile tags and row breaks.
    - internvl: InternVL. The image is cut into the tile grid (min_tiles..max_tiles tiles) whose aspect ratio is
      closest to it, plus a thumbnail when that grid has more than one tile; tokens_per_tile per tile (after
      pixel shuffle) plus begin/end-of-image.
    """

    kind: Literal["fixed", "smart_resize", "patch_rows", "pan_and_scan", "tiles", "anyres", "idefics3", "internvl"]
    tokens_per_image: int | None = Field(default=None, ge=1)
    patch_size: int | None = Field(default=None, ge=1)
    merge_size: int = Field(default=1, ge=1)
    min_pixels: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)
    max_image_size: int | None = Field(default=None, ge=1)
    tile_size: int | None = Field(default=None, ge=1)
    tokens_per_tile: int | None = Field(default=None, ge=1)
    max_tiles: int | None = Field(default=None, ge=1)
    min_tiles: int = Field(default=1, ge=1)
    max_crops: int = Field(default=4, ge=1)
    min_crop_size: int = Field(default=256, ge=1)
    min_ratio_to_activate: float = Field(default=1.2, gt=0)
    grid_pinpoints: list[tuple[int, int]] | None = Field(
        default=None, description="anyres: candidate (height, width) resolutions, from the processor config")
    anyres_max_tiles: int | None = Field(default=None, ge=1, description="LLaVA-OneVision 'anyres_max_N'")
    longest_edge: int | None = Field(default=None, ge=1, description="idefics3: resize target of the longest edge")
    encoder_patches: int | None = Field(
        default=None, ge=1, description="fixed/pan_and_scan: encoder patches per image or crop (e.g. (896/14)^2)")
    extra_tokens: int = Field(default=0, ge=0, description="fixed tokens around each image (begin/end markers)")
    in_decoder_sequence: bool = True

    @model_validator(mode="after")
    def _fields_for_kind(self) -> ImageTokenRule:
        needed = {
            "fixed": ["tokens_per_image"],
            "smart_resize": ["patch_size", "min_pixels", "max_pixels"],
            "patch_rows": ["patch_size", "max_image_size"],
            "pan_and_scan": ["tokens_per_image"],
            "tiles": ["tile_size", "tokens_per_tile", "max_tiles"],
            "anyres": ["tile_size", "patch_size", "tokens_per_tile", "grid_pinpoints"],
            "idefics3": ["tile_size", "patch_size", "tokens_per_tile", "longest_edge"],
            "internvl": ["tile_size", "patch_size", "tokens_per_tile", "max_tiles"],
        }[self.kind]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"image token rule {self.kind!r} needs {', '.join(missing)}")
        return self

    def count(self, width: int, height: int) -> int:
        """Tokens one width x height image adds (see `ImageEncoding.tokens`)."""
        return self.encode(width, height).tokens

    def encode(self, width: int, height: int) -> ImageEncoding:
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        return getattr(self, f"_encode_{self.kind}")(width, height)

    # ---- one method per kind -------------------------------------------------------------------------------------
    def _per_crop_patches(self) -> int:
        return int(self.encoder_patches or (self.tokens_per_image or 1) * self.merge_size**2)

    def _encode_fixed(self, width: int, height: int) -> ImageEncoding:
        return ImageEncoding(int(self.tokens_per_image or 0) + self.extra_tokens, self._per_crop_patches())

    def _encode_pan_and_scan(self, width: int, height: int) -> ImageEncoding:
        crops = 1 + self._pan_and_scan_crops(width, height)
        return ImageEncoding(crops * (int(self.tokens_per_image or 0) + self.extra_tokens),
                             crops * self._per_crop_patches(), crops)

    def _encode_smart_resize(self, width: int, height: int) -> ImageEncoding:
        step = (self.patch_size or 1) * self.merge_size
        h, w = _smart_resize(height, width, step, self.min_pixels or 0, self.max_pixels or 0)
        tokens = (h // step) * (w // step)
        return ImageEncoding(tokens + self.extra_tokens, tokens * self.merge_size**2)

    def _encode_patch_rows(self, width: int, height: int) -> ImageEncoding:
        step = (self.patch_size or 1) * self.merge_size
        scale = max(width / (self.max_image_size or 1), height / (self.max_image_size or 1), 1.0)
        cols = math.ceil(math.floor(width / scale) / step)
        rows = math.ceil(math.floor(height / scale) / step)
        return ImageEncoding(rows * cols + rows + self.extra_tokens, rows * cols * self.merge_size**2)

    def _encode_tiles(self, width: int, height: int) -> ImageEncoding:
        tile = self.tile_size or 1
        canvas_h, canvas_w = _mllama_canvas(height, width, self.max_tiles or 1, tile)
        tiles = (canvas_h // tile) * (canvas_w // tile)
        per_tile = int(self.tokens_per_tile or 0)
        return ImageEncoding(tiles * per_tile + self.extra_tokens, tiles * per_tile, tiles)

    def _encode_anyres(self, width: int, height: int) -> ImageEncoding:
        tile, patch = self.tile_size or 1, self.patch_size or 1
        best_h, best_w = _select_best_resolution(height, width, self.grid_pinpoints or [(tile, tile)])
        side = math.isqrt(int(self.tokens_per_tile or 0))
        scale_h, scale_w = best_h // tile, best_w // tile
        cur_h, cur_w = side * scale_h, side * scale_w
        if width / height > cur_w / cur_h:
            new_h = int(round(height * (cur_w / width), 7))
            cur_h -= ((cur_h - new_h) // 2) * 2
        else:
            new_w = int(round(width * (cur_h / height), 7))
            cur_w -= ((cur_w - new_w) // 2) * 2
        unpadded, newlines = cur_h * cur_w, cur_h
        if self.anyres_max_tiles:
            ratio = math.sqrt(cur_h * cur_w / (self.anyres_max_tiles * side**2))
            if ratio > 1.1:
                unpadded = int(cur_h // ratio) * int(cur_w // ratio)
                newlines = int(cur_h // ratio)
        tiles = 1 + math.ceil(best_h / tile) * math.ceil(best_w / tile)
        tokens = unpadded + newlines + int(self.tokens_per_tile or 0) + self.extra_tokens
        return ImageEncoding(tokens, tiles * (tile // patch) ** 2, tiles)

    def _encode_idefics3(self, width: int, height: int) -> ImageEncoding:
        tile, patch, per_tile = self.tile_size or 1, self.patch_size or 1, int(self.tokens_per_tile or 0)
        h, w = _rescale_longest_edge(height, width, self.longest_edge or max(height, width))
        rows = cols = 0
        if math.ceil(h / tile) * tile > tile or math.ceil(w / tile) * tile > tile:
            rows, cols = math.ceil(h / tile), math.ceil(w / tile)
        # Global tile: <fake><global-img> + tokens + <fake>; each split tile: <fake><row_i_col_j> + tokens; one "\n"
        # per row ("\n\n" before the global tile is one token in the models' tokenizers).
        tokens = per_tile + 3 + rows * ((per_tile + 2) * cols + 1)
        tiles = rows * cols + 1
        return ImageEncoding(tokens + self.extra_tokens, tiles * (tile // patch) ** 2, tiles)

    def _encode_internvl(self, width: int, height: int) -> ImageEncoding:
        tile, patch = self.tile_size or 1, self.patch_size or 1
        cols, rows = _internvl_grid(height, width, tile, self.min_tiles, self.max_tiles or 1)
        tiles = 1 + cols * rows if cols * rows > 1 else 1  # the grid plus a thumbnail of the whole image
        tokens = 2 + tiles * int(self.tokens_per_tile or 0)  # <img> ... </img>
        return ImageEncoding(tokens + self.extra_tokens, tiles * (tile // patch) ** 2, tiles)

    def _pan_and_scan_crops(self, width: int, height: int) -> int:
        long_side, short_side = max(width, height), min(width, height)
        if long_side / short_side < self.min_ratio_to_activate:
            return 0
        crops = max(2, min(self.max_crops, math.floor(long_side / short_side + 0.5)))
        crops = min(math.floor(long_side / self.min_crop_size), crops)
        if crops < 2 or min(math.ceil(long_side / crops), short_side) < self.min_crop_size:
            return 0
        return crops


def _smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule (its image processor): round to multiples of `factor`, keep the pixel count in range."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _select_best_resolution(height: int, width: int, candidates: list[tuple[int, int]]) -> tuple[int, int]:
    """LLaVA-NeXT's choice (transformers image_processing_utils.select_best_resolution): the candidate keeping the
    most of the image's pixels, then the one wasting the fewest."""
    best, best_effective, best_wasted = candidates[0], 0, math.inf
    for cand_h, cand_w in candidates:
        scale = min(cand_w / width, cand_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = cand_w * cand_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (cand_h, cand_w), effective, wasted
    return best


def _rescale_longest_edge(height: int, width: int, longest: int, upper_bound: int = 4096) -> tuple[int, int]:
    """Idefics3's resize: longest edge to `longest` (even other edge), then within its 4096 upper bound."""
    aspect = width / height
    if width >= height:
        width = longest
        height = int(width / aspect)
        height += height % 2
    else:
        height = longest
        width = int(height * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    if width >= height and width > upper_bound:
        width, height = upper_bound, int(upper_bound / aspect)
    elif height > width and height > upper_bound:
        height, width = upper_bound, int(upper_bound * aspect)
    return max(height, 1), max(width, 1)


def _internvl_grid(height: int, width: int, tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """InternVL's (columns, rows): the grid with the closest aspect ratio; on a tie the larger grid while the image
    covers more than half of it (transformers GotOcr2 get_optimal_tiled_canvas)."""
    grids = sorted(((c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1)
                    if min_tiles <= c * r <= max_tiles), key=lambda g: g[0] * g[1])
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), math.inf
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def _mllama_canvas(height: int, width: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """Llama 3.2 Vision's canvas (height, width): the smallest upscale that fits, else the largest downscale; ties
    go to the smaller area (transformers Mllama get_optimal_tiled_canvas)."""
    canvases = [(a * tile, b * tile) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1)
                if a * b <= max_tiles]
    scales = [min(ch / height, cw / width) for ch, cw in canvases]
    up = [s for s in scales if s >= 1]
    chosen = min(up) if up else max(scales)
    return min((c for c, s in zip(canvases, scales, strict=True) if s == chosen), key=lambda c: c[0] * c[1])


class VisionTower(StrictModel):
    """A ViT-style encoder; its parameter count follows from the shapes (see `params`)."""

    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    patch_size: int = Field(ge=1)
    image_size: int | None = None
    gated_mlp: bool = Field(default=False, description="SwiGLU MLP (3 matrices) as in Qwen2.5-VL's ViT")
    temporal_patch_size: int = 1
    channels: int = 3

    def params(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        per_layer = 4 * h * h + 4 * h + (3 if self.gated_mlp else 2) * h * i + 4 * h + i
        patch_embed = self.channels * self.temporal_patch_size * self.patch_size**2 * h
        positions = ((self.image_size or 0) // self.patch_size) ** 2 * h
        return self.num_layers * per_layer + patch_embed + positions


class ModelArch(StrictModel):
    """Shapes of a vision-language model. Parameter counts left empty are computed from the shapes."""

    name: str = Field(description="bundled id, e.g. 'qwen2.5-vl-7b', or the folder name")
    hf_id: str | None = Field(default=None, description="for reference only; nothing is downloaded")
    family: str = Field(description="llava | llava_next | llava_onevision | qwen2_5_vl | qwen2_vl | gemma3 | mllama | "
                        "pixtral | mistral3 | idefics3 | smolvlm | internvl")
    num_layers: int = Field(ge=1, description="decoder layers, cross-attention layers included")
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    max_position_embeddings: int = Field(ge=1)
    tie_word_embeddings: bool = False
    sliding_window: int | None = Field(default=None, description="local-attention window (Gemma 3), if any")
    cross_attention_layers: list[int] = Field(default_factory=list, description="Llama 3.2 Vision")
    vision: VisionTower | None = None
    projector_dims: list[int] = Field(default_factory=list, description="linear layer widths, e.g. [1024, 4096, 4096]")
    image_token_rule: ImageTokenRule
    language_params: int | None = Field(default=None, ge=0)
    vision_params: int | None = Field(default=None, ge=0)
    projector_params: int | None = Field(default=None, ge=0)
    total_params_published: int | None = Field(default=None, description="from the model card, for checking")
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fill_params(self) -> ModelArch:
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_kv_heads {self.num_kv_heads}")
        if self.language_params is None:
            self.language_params = self.embedding_params() + self.decoder_linear_params() + self._norm_params()
        if self.vision_params is None:
            self.vision_params = self.vision.params() if self.vision else 0
        if self.projector_params is None:
            dims = self.projector_dims
            self.projector_params = sum(a * b + b for a, b in itertools.pairwise(dims))
        return self

    # ---- derived shapes -------------------------------------------------------------------------------------------
    @property
    def kv_layers(self) -> int:
        """Layers that keep a per-token KV cache of the decoder sequence (cross-attention layers do not)."""
        return self.num_layers - len(self.cross_attention_layers)

    @property
    def total_params(self) -> int:
        return int(self.language_params or 0) + int(self.vision_params or 0) + int(self.projector_params or 0)

    def decoder_linears(self) -> list[tuple[int, int]]:
        """(in_features, out_features) of every Linear in one decoder layer: q, k, v, o, gate, up, down."""
        h, hd, i = self.hidden_size, self.head_dim, self.intermediate_size
        q, kv = self.num_attention_heads * hd, self.num_kv_heads * hd
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def decoder_linear_params(self) -> int:
        return self.num_layers * sum(a * b for a, b in self.decoder_linears())

    def embedding_params(self) -> int:
        """Input embeddings plus lm_head (once if tied); both stay bf16 under every vlmopt scheme."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def _norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    def image_tokens(self, width: int, height: int) -> int:
        """Tokens one width x height image adds (to the decoder sequence unless the rule says otherwise)."""
        return self.image_token_rule.count(width, height)

    def image_encoding(self, width: int, height: int) -> ImageEncoding:
        """Tokens, encoder patches and tiles of one width x height image. For a fixed-size encoder input (LLaVA-1.5,
        Gemma 3) the patches come from the vision tower's input size when the rule does not give them."""
        rule = self.image_token_rule
        encoding = rule.encode(width, height)
        if rule.kind in ("fixed", "pan_and_scan") and rule.encoder_patches is None and self.vision \
                and self.vision.image_size:
            per_crop = (self.vision.image_size // self.vision.patch_size) ** 2
            encoding = ImageEncoding(encoding.tokens, per_crop * encoding.tiles, encoding.tiles)
        return encoding


# ---- loading ----------------------------------------------------------------------------------------------------
def list_bundled_models() -> list[str]:
    return list(data_files("models"))


def load_model_arch(name_or_dir: str | Path) -> ModelArch:
    """A bundled spec by id (`qwen2.5-vl-7b`), a spec YAML file, or a model folder with config.json."""
    path = Path(name_or_dir)
    if path.is_dir():
        return arch_from_model_dir(path)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return _load_spec(path)
    bundled = data_files("models").get(str(name_or_dir))
    if bundled is not None:
        return _load_spec(bundled)
    raise ContractError(
        f"{name_or_dir}: not a model folder with config.json and not a bundled model; bundled: "
        f"{', '.join(list_bundled_models())}"
    )


def _load_spec(path: Path) -> ModelArch:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ContractError(f"{path}: expected a mapping at the top level")
    try:
        return ModelArch.model_validate(data)
    except ValidationError as exc:
        raise ContractError(format_validation_error(path, exc)) from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ContractError(f"{path}: expected a JSON object")
    return data


def arch_from_model_dir(model_dir: Path) -> ModelArch:
    """Build a ModelArch from a Hugging Face model folder (config.json, optional preprocessor_config.json)."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ContractError(f"{model_dir}: no config.json")
    config = _read_json(config_path)
    preprocessor_path = model_dir / "preprocessor_config.json"
    preprocessor = _read_json(preprocessor_path) if preprocessor_path.is_file() else {}
    model_type = config.get("model_type", "")
    builders = {
        "llava": _from_llava,
        "qwen2_vl": _from_qwen_vl,
        "qwen2_5_vl": _from_qwen_vl,
        "gemma3": _from_gemma3,
        "mllama": _from_mllama,
        "mistral3": _from_mistral3,
        "llava_next": _from_llava_next,
        "llava_onevision": _from_llava_next,
        "idefics3": _from_idefics3,
        "smolvlm": _from_idefics3,
        "internvl": _from_internvl,
    }
    if model_type not in builders:
        raise ContractError(f"{config_path}: model_type {model_type!r} is not supported; supported: "
                            f"{', '.join(builders)}")
    try:
        fields = builders[model_type](config, preprocessor)
        fields.setdefault("name", model_dir.name)
        fields.setdefault("sources", [f"{config_path}"])
        return ModelArch.model_validate(fields)
    except (KeyError, TypeError) as exc:
        raise ContractError(f"{config_path}: missing or malformed field {exc}") from exc
    except ValidationError as exc:
        raise ContractError(format_validation_error(config_path, exc)) from exc


def _text_fields(text: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    heads = text["num_attention_heads"]
    hidden = text["hidden_size"]
    return {
        "num_layers": text["num_hidden_layers"],
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": text.get("num_key_value_heads") or heads,
        "head_dim": text.get("head_dim") or hidden // heads,
        "vocab_size": text["vocab_size"],
        "intermediate_size": text["intermediate_size"],
        "max_position_embeddings": text.get("max_position_embeddings", 4096),
        "tie_word_embeddings": bool(top.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
    }


def _from_llava(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    text, vision = config["text_config"], config["vision_config"]
    fields = _text_fields(text, config)
    fields["family"] = "pixtral" if vision.get("model_type") == "pixtral" else "llava"
    fields["vision"] = {
        "num_layers": vision["num_hidden_layers"],
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "patch_size": vision["patch_size"],
        "image_size": vision.get("image_size"),
    }
    fields["projector_dims"] = [vision["hidden_size"], fields["hidden_size"], fields["hidden_size"]]
    if fields["family"] == "pixtral":
        fields["vision"]["image_size"] = None  # rotary positions: no learned position table
        fields["vision"]["gated_mlp"] = True
        fields["image_token_rule"] = {"kind": "patch_rows", "patch_size": vision["patch_size"],
                                      "max_image_size": vision.get("image_size", 1024)}
    else:
        per_side = vision["image_size"] // vision["patch_size"]
        extra = 1 if config.get("vision_feature_select_strategy") == "full" else 0  # 'default' drops CLS
        fields["image_token_rule"] = {"kind": "fixed", "tokens_per_image": per_side * per_side + extra}
    return fields


def _from_qwen_vl(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config") or config
    vision = config["vision_config"]
    fields = _text_fields(text, config)
    fields["family"] = config["model_type"]
    merge = vision.get("spatial_merge_size", 2)
    vision_hidden = vision.get("hidden_size") or vision["embed_dim"]
    fields["vision"] = {
        "num_layers": vision["depth"],
        "hidden_size": vision_hidden,
        "intermediate_size": vision.get("intermediate_size") or int(vision_hidden * vision.get("mlp_ratio", 4)),
        "patch_size": vision["patch_size"],
        "gated_mlp": config["model_type"] == "qwen2_5_vl",
        "temporal_patch_size": vision.get("temporal_patch_size", 2),
    }
    out = vision.get("out_hidden_size") or fields["hidden_size"]
    fields["projector_dims"] = [vision_hidden * merge * merge, vision_hidden * merge * merge, out]
    size = preprocessor.get("size") or {}
    fields["image_token_rule"] = {
        "kind": "smart_resize",
        "extra_tokens": 2,  # <|vision_start|> and <|vision_end|> around every image (the chat template's)
        "patch_size": vision["patch_size"],
        "merge_size": merge,
        "min_pixels": preprocessor.get("min_pixels") or size.get("shortest_edge") or 56 * 56,
        "max_pixels": preprocessor.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280,
    }
    return fields


def _from_gemma3(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    text, vision = config["text_config"], config["vision_config"]
    fields = _text_fields(text, config)
    fields["tie_word_embeddings"] = True
    fields["family"] = "gemma3"
    fields["sliding_window"] = text.get("sliding_window")
    fields["vision"] = {
        "num_layers": vision["num_hidden_layers"],
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "patch_size": vision["patch_size"],
        "image_size": vision.get("image_size"),
    }
    fields["projector_dims"] = [vision["hidden_size"], fields["hidden_size"]]
    tokens = config.get("mm_tokens_per_image", 256)
    # Per image the prompt holds <start_of_image> (chat template), then the processor's "\n\n", the soft tokens,
    # <end_of_image> and "\n\n" (transformers Gemma3Processor.full_image_sequence): 4 tokens beside the soft tokens.
    kind = "pan_and_scan" if preprocessor.get("do_pan_and_scan") else "fixed"
    fields["image_token_rule"] = {"kind": kind, "tokens_per_image": tokens, "extra_tokens": 4}
    return fields


def _from_mllama(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    text, vision = config["text_config"], config["vision_config"]
    fields = _text_fields(text, config)
    fields["family"] = "mllama"
    fields["cross_attention_layers"] = list(text.get("cross_attention_layers", []))
    fields["vision"] = {
        "num_layers": vision["num_hidden_layers"] + vision.get("num_global_layers", 0),
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "patch_size": vision["patch_size"],
        "image_size": vision.get("image_size"),
    }
    fields["projector_dims"] = [vision.get("vision_output_dim", vision["hidden_size"]), fields["hidden_size"]]
    per_side = vision["image_size"] // vision["patch_size"]
    fields["image_token_rule"] = {
        "kind": "tiles",
        "tile_size": vision["image_size"],
        "tokens_per_tile": per_side * per_side + 1,
        "max_tiles": vision.get("max_num_tiles", 4),
        "in_decoder_sequence": False,
    }
    return fields


def _from_mistral3(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    text, vision = config["text_config"], config["vision_config"]
    fields = _text_fields(text, config)
    fields["family"] = "mistral3"
    merge = config.get("spatial_merge_size", 2)
    fields["vision"] = {
        "num_layers": vision["num_hidden_layers"],
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "patch_size": vision["patch_size"],
        "gated_mlp": True,
    }
    fields["projector_dims"] = [vision["hidden_size"] * merge * merge, fields["hidden_size"], fields["hidden_size"]]
    fields["image_token_rule"] = {"kind": "patch_rows", "patch_size": vision["patch_size"], "merge_size": merge,
                                  "max_image_size": vision.get("image_size", 1540)}
    return fields


def _side(value: Any) -> int:
    """An image or patch size from a config: an int, or [height, width] (InternVL)."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _vision_fields(vision: dict[str, Any], image_size: bool = True) -> dict[str, Any]:
    return {
        "num_layers": vision["num_hidden_layers"],
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "patch_size": _side(vision["patch_size"]),
        "image_size": _side(vision["image_size"]) if image_size and vision.get("image_size") else None,
    }


def _from_llava_next(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    """LLaVA-NeXT (CLIP, anyres) and LLaVA-OneVision (SigLIP, anyres_max_9)."""
    text, vision = config["text_config"], config["vision_config"]
    fields = _text_fields(text, config)
    fields["family"] = config["model_type"]
    fields["vision"] = _vision_fields(vision)
    fields["projector_dims"] = [vision["hidden_size"], fields["hidden_size"], fields["hidden_size"]]
    tile, patch = _side(vision["image_size"]), _side(vision["patch_size"])
    pinpoints = preprocessor.get("image_grid_pinpoints") or config.get("image_grid_pinpoints") or [[tile, tile]]
    aspect = str(config.get("vision_aspect_ratio") or "")
    clip_cls = vision.get("model_type", "clip_vision_model").startswith("clip")
    full = config.get("vision_feature_select_strategy") == "full"
    fields["image_token_rule"] = {
        "kind": "anyres",
        "tile_size": tile,
        "patch_size": patch,
        "tokens_per_tile": (tile // patch) ** 2,
        "grid_pinpoints": [tuple(p) for p in pinpoints],
        "anyres_max_tiles": int(aspect.removeprefix("anyres_max_")) if aspect.startswith("anyres_max_") else None,
        "extra_tokens": 1 if full and clip_cls else 0,  # the base crop keeps CLIP's CLS token under 'full'
    }
    return fields


def _from_idefics3(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    """Idefics3 and SmolVLM: SigLIP tiles, pixel shuffle by scale_factor, a linear connector."""
    text, vision = config["text_config"], config["vision_config"]
    fields = _text_fields(text, config)
    fields["family"] = config["model_type"]
    fields["vision"] = _vision_fields(vision)
    scale = int(config.get("scale_factor", 2))
    fields["projector_dims"] = [vision["hidden_size"] * scale * scale, fields["hidden_size"]]
    tile, patch = _side(vision["image_size"]), _side(vision["patch_size"])
    tile = int((preprocessor.get("max_image_size") or {}).get("longest_edge", tile))
    longest = int((preprocessor.get("size") or {}).get("longest_edge", 4 * tile))
    fields["image_token_rule"] = {
        "kind": "idefics3", "tile_size": tile, "patch_size": patch, "longest_edge": longest,
        "tokens_per_tile": (tile // patch) ** 2 // (scale * scale),
    }
    return fields


def _from_internvl(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    """InternVL (transformers-native layout): InternViT tiles, pixel shuffle by downsample_ratio, MLP projector."""
    text, vision = config["text_config"], config["vision_config"]
    fields = _text_fields(text, config)
    fields["family"] = "internvl"
    fields["vision"] = _vision_fields(vision)
    ratio = float(config.get("downsample_ratio", 0.5))
    shuffled = round(vision["hidden_size"] / (ratio * ratio))
    fields["projector_dims"] = [shuffled, fields["hidden_size"], fields["hidden_size"]]
    tile, patch = _side(vision["image_size"]), _side(vision["patch_size"])
    size = preprocessor.get("size") or {}
    tile = int(size.get("height", tile))
    fields["image_token_rule"] = {
        "kind": "internvl", "tile_size": tile, "patch_size": patch,
        "tokens_per_tile": int(config.get("image_seq_length") or round((tile // patch) ** 2 * ratio * ratio)),
        "min_tiles": int(preprocessor.get("min_patches", 1)),
        "max_tiles": int(preprocessor.get("max_patches", 12)) if preprocessor.get("crop_to_patches", True) else 1,
    }
    return fields


__all__ = [
    "ImageEncoding",
    "ImageTokenRule",
    "ModelArch",
    "VisionTower",
    "arch_from_model_dir",
    "list_bundled_models",
    "load_model_arch",
]
