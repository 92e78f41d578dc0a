"""Dense reward maps: where in the image a CLIPScore or OCR reward comes from.

Every map is an (H, W) float array in [0, 1] aligned with the input image.

CLIPScore maps differentiate s = w * cos(E_image, E_text) (the score before the
``max(., 0)`` clamp, so an image the model finds unrelated still gets a map) for
one image and its text, on an open_clip ViT:

- ``gradient``: |ds/dx| per pixel (max over RGB) of the preprocessed image
  (Simonyan et al. 2014, saliency maps), min-max normalised.
- ``gradcam``: Grad-CAM (Selvaraju et al. 2017) on the last block's patch tokens
  A (P, D), taken where the block reads them (after its ln_1; the block's output
  patch tokens do not reach a CLS-pooled embedding, their gradient is 0):
  alpha_d = mean_p ds/dA[p, d], cam_p = ReLU(sum_d alpha_d A[p, d]), reshaped to
  the (gh, gw) patch grid and upsampled bilinearly.
- ``attention``: the last block's attention from CLS to the patches, mean over
  heads; ``attention-grad`` weights it by its gradient, mean_h ReLU(dS/dA_h * A_h)
  (Chefer et al. 2021), for the CLS row.

The model sees the image resized (shortest side) and centre-cropped, as
open_clip preprocesses it; the map covers that centred square of the image and
is 0 outside it.

OCR map: neutral background 0.5, each detected line's box filled with that
line's reward (its matched target's conf * (1 - d), see mixgrpo.rewards.ocr),
Gaussian-blurred (sigma pixels) into a soft mask.
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

CLIP_METHODS = ("gradient", "gradcam", "attention", "attention-grad")


def normalise01(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant array becomes zeros."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _to_image_frame(square: torch.Tensor, image_size: tuple[int, int], resize_mode: str) -> np.ndarray:
    """(h, w) map over the model's input -> (H, W) map over the image (centre square for ``shortest``)."""
    width, height = image_size
    if resize_mode != "shortest":
        target, box = (height, width), (0, 0)
    else:
        side = min(width, height)
        target, box = (side, side), ((height - side) // 2, (width - side) // 2)
    scaled = torch.nn.functional.interpolate(square[None, None].float(), size=target, mode="bilinear",
                                             align_corners=False)[0, 0].detach().cpu().numpy()
    full = np.zeros((height, width))
    full[box[0]:box[0] + target[0], box[1]:box[1] + target[1]] = normalise01(scaled)
    return np.clip(full, 0.0, 1.0)


def _vit(scorer: Any) -> Any:
    visual = scorer.load().model.visual
    if not hasattr(visual, "transformer") or not hasattr(visual, "grid_size"):
        raise ValueError("dense CLIP maps need an open_clip VisionTransformer image tower")
    return visual


def _score(scorer: Any, pixels: torch.Tensor, text: str) -> torch.Tensor:
    return scorer.w * scorer.cosine(pixels, [text]).sum()


def _resize_mode(scorer: Any) -> str:
    return getattr(scorer.model.visual, "preprocess_cfg", {}).get("resize_mode", "shortest")


def gradient_map(scorer: Any, image: Image.Image, text: str) -> np.ndarray:
    """(H, W) |d score / d pixel| (max over RGB), normalised to [0, 1]."""
    scorer.load()
    pixels = scorer.image_tensor([image]).requires_grad_(True)  # (1, 3, S, S)
    with torch.enable_grad():
        _score(scorer, pixels, text).backward()
    return _to_image_frame(pixels.grad[0].abs().amax(dim=0), image.size, _resize_mode(scorer))


def _patch_tokens(output: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """(P, D) patch tokens of image 0 from a block output (N, L, D) or (L, N, D); token 0 is CLS."""
    tokens = output[0] if batch_first else output[:, 0]
    return tokens[1:]


def vit_gradcam(visual: Any, score: Callable[[], torch.Tensor], image_size: tuple[int, int]) -> np.ndarray:
    """(H, W) Grad-CAM of the scalar ``score()`` (a forward through ``visual``) on its last block's patch tokens.

    ``visual``: an open_clip VisionTransformer; ``image_size``: (W, H) of the image the map
    is aligned with (the model saw it resized and centre-cropped as ``visual.preprocess_cfg`` says).
    """
    captured: dict[str, torch.Tensor] = {}

    def keep(module: Any, inputs: Any, output: torch.Tensor) -> None:
        output.retain_grad()
        captured["tokens"] = output

    # The last block's *input* (after its ln_1): its output patch tokens never reach a CLS-pooled embedding.
    handle = visual.transformer.resblocks[-1].ln_1.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            score().backward()
    finally:
        handle.remove()
    batch_first = getattr(visual.transformer, "batch_first", True)
    activations = _patch_tokens(captured["tokens"], batch_first)  # (P, D)
    gradients = _patch_tokens(captured["tokens"].grad, batch_first)  # (P, D)
    alpha = gradients.mean(dim=0)  # (D,)
    cam = torch.relu(activations @ alpha)  # (P,)
    resize_mode = getattr(visual, "preprocess_cfg", {}).get("resize_mode", "shortest")
    return _to_image_frame(cam.reshape(visual.grid_size), image_size, resize_mode)


def gradcam_map(scorer: Any, image: Image.Image, text: str) -> np.ndarray:
    """(H, W) Grad-CAM of the score on the last block's patch tokens, non-negative, in [0, 1]."""
    return vit_gradcam(_vit(scorer), lambda: _score(scorer, scorer.image_tensor([image]), text), image.size)


def explicit_attention(block: Any, q_x: torch.Tensor, k_x: Any = None, v_x: Any = None,
                       attn_mask: Any = None) -> torch.Tensor:
    """Self-attention of an open_clip ResidualAttentionBlock written out, keeping A (N, h, L, L) on the block.

    Same math as its nn.MultiheadAttention (batch_first, no mask): q, k, v = x W_in^T + b,
    A = softmax(q k^T / sqrt(d_head)), out = (A v) W_out^T + b_out.
    """
    attention = block.attn
    batch_first = getattr(attention, "batch_first", False)
    x = q_x if batch_first else q_x.transpose(0, 1)  # (N, L, D)
    n, length, width = x.shape
    heads = attention.num_heads
    q, k, v = (x @ attention.in_proj_weight.T + attention.in_proj_bias).split(width, dim=-1)
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))  # (N, h, L, d)
    weights = torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5, dim=-1)  # (N, h, L, L)
    if weights.requires_grad:
        weights.retain_grad()
    block.last_attention = weights
    out = (weights @ v).transpose(1, 2).reshape(n, length, width)
    out = attention.out_proj(out)
    return out if batch_first else out.transpose(0, 1)


@contextmanager
def _explicit_last_attention(visual: Any) -> Iterator[Any]:
    block = visual.transformer.resblocks[-1]
    if not isinstance(getattr(block, "attn", None), torch.nn.MultiheadAttention) or block.attn.in_proj_weight is None:
        raise ValueError("attention maps need an open_clip ViT whose blocks use nn.MultiheadAttention")
    block.attention = types.MethodType(explicit_attention, block)
    try:
        yield block
    finally:
        del block.attention  # back to the class's method
        block.__dict__.pop("last_attention", None)


def attention_map(scorer: Any, image: Image.Image, text: str, gradient_weighted: bool = False) -> np.ndarray:
    """(H, W) last-block attention from CLS to the patches (mean over heads), optionally gradient-weighted."""
    visual = _vit(scorer)
    with _explicit_last_attention(visual) as block, torch.enable_grad():
        _score(scorer, scorer.image_tensor([image]), text).backward()
        attention = block.last_attention  # (N, h, L, L), N = 1
        weights = attention[0]
        if gradient_weighted:
            weights = torch.relu(attention.grad[0] * weights)
        cls_to_patches = weights[:, 0, 1:].mean(dim=0)  # (P,)
    return _to_image_frame(cls_to_patches.reshape(visual.grid_size), image.size, _resize_mode(scorer))


def clip_map(scorer: Any, image: Image.Image, text: str, method: str = "gradcam") -> np.ndarray:
    """(H, W) CLIPScore map by ``method`` (gradient | gradcam | attention | attention-grad)."""
    if method == "gradient":
        return gradient_map(scorer, image, text)
    if method == "gradcam":
        return gradcam_map(scorer, image, text)
    if method in ("attention", "attention-grad"):
        return attention_map(scorer, image, text, gradient_weighted=method == "attention-grad")
    raise ValueError(f"unknown CLIP map method {method!r}; known: {list(CLIP_METHODS)}")


def ocr_map(image_size: tuple[int, int], lines: list[Any], line_rewards: np.ndarray, sigma: float = 6.0,
            background: float = 0.5) -> np.ndarray:
    """(H, W) OCR reward map: ``background`` outside text, each line's reward inside its box, blurred."""
    from scipy.ndimage import gaussian_filter

    width, height = image_size
    mask = np.full((height, width), background)
    inside = np.zeros((height, width), dtype=bool)
    for line, reward in zip(lines, np.clip(np.asarray(line_rewards, dtype=np.float64), 0.0, 1.0)):
        left, top, right, bottom = line.box
        box = (slice(max(top, 0), bottom), slice(max(left, 0), right))
        mask[box] = np.where(inside[box], np.maximum(mask[box], reward), reward)  # overlaps keep the best line
        inside[box] = True
    return np.clip(gaussian_filter(mask, sigma) if sigma > 0 else mask, 0.0, 1.0)


def overlay(image: Image.Image | np.ndarray, heat: np.ndarray, alpha: float = 0.5,
            colormap: str = "jet") -> Image.Image:
    """The image with ``heat`` (H, W) in [0, 1] blended on top as a colour map."""
    import matplotlib

    base = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    colours = matplotlib.colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0  # (H, W, 3)
    return Image.fromarray(np.uint8(np.clip((1 - alpha) * base + alpha * colours, 0, 255)))
