"""CPU bf16: attention and GroupNorm in float32, the mixer layer, and a bf16 training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from miro_core.low_precision import GroupNorm32, attention, cpu_has_native_bf16, resolve_mixed_precision
from miro_core.mixer_layer import MixerStack
from miro_core.train import Trainer

from .conftest import tiny_train_config


def qkv(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, 2, 6, 8, generator=generator).to(dtype) for _ in range(3))  # type: ignore[return-value]


def test_attention_is_sdpa_in_float32():
    q, k, v = qkv(torch.float32)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])[:, None, None, :]
    assert torch.equal(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_attention_computes_bf16_inputs_in_float32_even_under_autocast():
    q, k, v = qkv(torch.bfloat16)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected)
    # plain bf16 SDPA rounds inside the kernel, so it is not what attention() returns
    assert not torch.equal(F.scaled_dot_product_attention(q, k, v), expected)


def test_group_norm32_normalises_in_float32_and_keeps_the_dtype():
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    norm = GroupNorm32(4, 8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert out.dtype == torch.bfloat16
    expected = F.group_norm(x.float(), 4, norm.weight, norm.bias, norm.eps).to(torch.bfloat16)
    assert torch.equal(out, expected)
    assert set(norm.state_dict()) == set(nn.GroupNorm(4, 8).state_dict())
    # a model cast to bf16 as a whole (bf16 parameters) normalises in float32 too
    norm.to(torch.bfloat16)
    assert norm(x).dtype == torch.bfloat16


def test_mixer_stack_matches_transformer_encoder_and_loads_its_weights():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 64, dropout=0.0, batch_first=True, norm_first=True)
    reference = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    mixer = MixerStack(16, 2, 2)
    assert set(mixer.state_dict()) == set(reference.state_dict()), "earlier run folders must load"
    mixer.load_state_dict(reference.state_dict())
    x = torch.randn(3, 7, 16, requires_grad=True)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False
    ours, theirs = mixer(x, mask), reference(x, src_key_padding_mask=~mask)
    torch.testing.assert_close(ours[mask], theirs[mask])
    (grad_ours,) = torch.autograd.grad(ours[mask].sum(), x)
    (grad_theirs,) = torch.autograd.grad(theirs[mask].sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_mixer_rejects_a_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        MixerStack(16, 3, 1)


def test_bf16_training_on_cpu_saves_finite_float32_weights(tiny_annotations, tiny_bins, registry, tmp_path):
    # a float32 run first: the same process must accept a bf16 run after it
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, tmp_path / "fp32", steps=2), registry, progress=False).run()
    out: Path = tmp_path / "bf16"
    trainer = Trainer(
        tiny_train_config(tiny_annotations, tiny_bins, out, steps=8, mixed_precision="bf16", lr=3e-3),
        registry,
        progress=False,
    )
    trainer.run()
    from safetensors.torch import load_file

    latest = json.loads((out / "latest.json").read_text())["path"]
    weights = load_file(str(out / latest / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert all(torch.isfinite(t).all() for t in weights.values())


ZEN4_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 vaes\n"
SKYLAKE_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl\n"


def test_native_bf16_is_read_from_cpu_flags():
    assert cpu_has_native_bf16(ZEN4_FLAGS)
    assert cpu_has_native_bf16("flags : sse2 amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16(SKYLAKE_FLAGS), "AVX512 without bf16 instructions only emulates bf16"
    assert not cpu_has_native_bf16("")


def test_auto_mixed_precision_resolves_per_device(monkeypatch):
    import miro_core.low_precision as low_precision

    for choice in ("no", "fp16", "bf16"):
        assert resolve_mixed_precision(choice, "cpu") == choice
    monkeypatch.setattr(low_precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_mixed_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(low_precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_mixed_precision("auto", "cpu") == "no"


def test_trainer_records_the_resolved_precision(tiny_annotations, tiny_bins, registry, tmp_path, monkeypatch):
    import miro_core.low_precision as low_precision

    monkeypatch.setattr(low_precision, "cpu_has_native_bf16", lambda: False)
    config = tiny_train_config(tiny_annotations, tiny_bins, tmp_path / "run", mixed_precision="auto")
    assert Trainer(config, registry, progress=False).cfg.mixed_precision == "no"
