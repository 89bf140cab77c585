"""Run CLIP's text tower on a batch's used length instead of its whole context (77 positions).

Under the causal mask a position sees only those before it, and argmax pooling reads the end-of-text
token, so the padding after a batch's longest caption cannot change the result (up to float rounding;
docs/benchmarks.md). Models where that does not hold are left alone; weights are untouched."""
from __future__ import annotations

import types

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool


def is_causal(mask: torch.Tensor | None) -> bool:
    """A float mask with -inf strictly above the diagonal and 0 elsewhere (open_clip's build_causal_mask)."""
    if mask is None or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    above = torch.triu(torch.ones(mask.shape, dtype=torch.bool, device=mask.device), diagonal=1)
    return bool(torch.isneginf(mask[above]).all() and (mask[~above] == 0).all())


def supports(model: torch.nn.Module) -> bool:
    """Whether trimming is exact for this model (see the module docstring)."""
    return (isinstance(model, open_clip.CLIP) and getattr(model, "text_pool_type", None) == "argmax"
            and is_causal(getattr(model, "attn_mask", None)))


def used_length(text: torch.Tensor) -> int:
    """Positions up to the last end-of-text token of the batch (the one argmax pooling reads)."""
    return int(text.argmax(dim=-1).max()) + 1 if text.numel() else text.shape[-1]


def encode_text(model: torch.nn.Module, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """open_clip's CLIP.encode_text on text[:, :used_length] (positional embedding and mask sliced)."""
    n = used_length(text)
    text = text[:, :n]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)
    x = x + model.positional_embedding[:n].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        projection = model.text_projection
        x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
    return F.normalize(x, dim=-1) if normalize else x


def install(model: torch.nn.Module) -> bool:
    """Make this instance's `encode_text` (so `forward` and DDP) trim padding; False where not exact."""
    if not supports(model):
        return False
    model.encode_text = types.MethodType(encode_text, model)
    return True


def installed(model: torch.nn.Module) -> bool:
    method = model.__dict__.get("encode_text")
    return getattr(method, "__func__", None) is encode_text
