"""Record reference outputs of the authors' published package (miro-t2i 0.1.4) for tests/fixtures/.

Run it in a SEPARATE environment that has miro-t2i installed (never in the project's .venv; see
scripts/setup_authors_env.sh and docs/backbones.md)::

    bash scripts/setup_authors_env.sh /work/refenvs/miro-t2i
    /work/refenvs/miro-t2i/bin/python scripts/record_authors_reference.py --out tests/fixtures/authors-reference

It builds a small configuration of the released network (``CADRINTextCond`` + ``FlowPrecond``) with random
weights, saves it in the authors' 3-file layout (``config.json``, ``model.safetensors``,
``uncond_embedding.npy``; a float16 single-reward variant in ``miro-only-clip/``), a tiny random SDXL-shaped
VAE in ``vae/`` (diffusers layout), and records with the authors' own code:

- forward outputs of ``preconditioning(network, batch)`` (velocity and final latents), with and without
  previous latents;
- guided samples of ``MiroPipeline.__call__`` (their sampler: Euler, multi-reward CFG, self-conditioning
  latents carried per branch), the latents handed to the VAE and the uint8 images.

Their text encoder (FLAN-T5-XL) cannot be loaded offline, so the pipeline gets a lookup "encoder" that returns
fixed random prompt embeddings; everything after the text encoder is the authors' code. Outputs go to
``reference.safetensors`` and ``reference.json`` (the inputs of every case).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

SEED = 20260101
TEXT_DIM = 48
TEXT_LEN = 10
LATENT_SIZE = 8
NETWORK = {
    "data_size": LATENT_SIZE,
    "data_dim": 32,
    "num_input_channels": 4,
    "num_latents": 16,
    "latents_dim": 64,
    "label_dim": TEXT_DIM,
    "num_processing_layers": 1,
    "num_blocks": 2,
    "patch_size": 2,
    "num_cond_tokens": 0,
    "read_write_heads": 4,
    "compute_heads": 8,
    "use_cond_rin_block": True,
    "concat_cond_token_to_latents": False,
    "use_self_conditioning": True,
    "num_text_registers": 16,
}
ALL_KEYS = [
    "clip_score",
    "aesthetic_score",
    "image_reward_score",
    "pick_a_score_score",
    "hpsv2_score",
    "vqa_score",
    "sciscore_score",
]
PRECONDITIONING = {"num_latents": 16, "latents_dim": 64, "sigma_data": 0.5, "do_gradnorm_reweighting": True}
PROMPT_LENGTHS = [7, 3, 10]
#: Guided-sampling cases: MiroPipeline.__call__ arguments (prompt indices instead of strings).
CASES = [
    {
        "name": "guided",
        "prompts": [0, 1],
        "num_images_per_prompt": 1,
        "guidance_scale": 3.0,
        "num_inference_steps": 6,
        "reward_targets": {"clip_score": 0.75, "aesthetic_score": 1.0, "vqa_score": 0.5},
        "negative_reward_targets": {"hpsv2_score": 0.25},
        "seed": 0,
    },
    {
        "name": "guided_images_per_prompt",
        "prompts": [2],
        "num_images_per_prompt": 2,
        "guidance_scale": 7.0,
        "num_inference_steps": 5,
        "reward_targets": {},
        "negative_reward_targets": {},
        "seed": 3,
    },
    {
        "name": "unguided",
        "prompts": [1, 2],
        "num_images_per_prompt": 1,
        "guidance_scale": 0.0,
        "num_inference_steps": 4,
        "reward_targets": {"sciscore_score": 0.0},
        "negative_reward_targets": {},
        "seed": 5,
    },
]
#: Recorded after the cases above (new seeds only, so the earlier outputs stay byte-identical).
EXTRA_CASES = [
    {
        "name": "targets_beyond_unit_range",
        "prompts": [1],
        "num_images_per_prompt": 1,
        "guidance_scale": 2.0,
        "num_inference_steps": 3,
        "reward_targets": {"clip_score": 1.5, "aesthetic_score": -0.25},
        "negative_reward_targets": {"vqa_score": 1.2},
        "seed": 13,
    },
]
#: Their sampler called directly (as their pipeline calls it) with a given negative text, whose mask is all
#: True as their DiffusionModule.sample builds it, and under a CPU bf16 autocast (the structure of the CUDA
#: autocast their sampler applies: which tensors are rounded to bf16 and which stay float32).
DIRECT_CASES = [
    {"name": "given_negative_text", "prompts": [0, 2], "guidance_scale": 4.0, "num_inference_steps": 4, "seed": 17,
     "autocast": None},
    {"name": "guided_bf16_autocast", "prompts": [0, 1], "guidance_scale": 7.0, "num_inference_steps": 3, "seed": 19,
     "autocast": "bfloat16"},
]
DIRECT_TARGETS = {"clip_score": 0.8, "hpsv2_score": 0.4}
DIRECT_NEGATIVE = {"aesthetic_score": 0.3}
#: A released-network configuration that concatenates its conditioning tokens to the latents (every text
#: position, masked or not, becomes a latent token), with self-conditioning, no cond block, three rewards in a
#: non-canonical order and four registers. Its config.json is written as the authors' convert script writes it
#: (scheduler, top-level coherence_keys, sampler_defaults, ...). Sampled from prompt strings through a tiny
#: random T5 (``t5/``), whose states at padding positions are not zero.
CONCAT_TEXT_DIM = 16
CONCAT_TEXT_LEN = 6
CONCAT_KEYS = ["vqa_score", "clip_score", "hpsv2_score"]
CONCAT_NETWORK = {
    "data_size": LATENT_SIZE,
    "data_dim": 48,
    "num_input_channels": 4,
    "num_latents": len(CONCAT_KEYS) + 4 + CONCAT_TEXT_LEN + 1 + 8,
    "latents_dim": 32,
    "label_dim": CONCAT_TEXT_DIM,
    "num_cond_tokens": len(CONCAT_KEYS) + 4 + CONCAT_TEXT_LEN,
    "num_processing_layers": 2,
    "num_blocks": 1,
    "patch_size": 2,
    "read_write_heads": 4,
    "compute_heads": 4,
    "num_text_registers": 4,
    "coherence_keys": CONCAT_KEYS,
    "coherence_dropout": 0.1,
    "dropout_strategy": "uniform",
    "use_cond_rin_block": False,
    "concat_cond_token_to_latents": True,
    "use_self_conditioning": True,
}
CONCAT_CASE = {
    "name": "concat_prompts",
    "prompts": ["a red cat", "two blue birds on a table"],
    "num_images_per_prompt": 2,
    "guidance_scale": 4.0,
    "num_inference_steps": 5,
    "reward_targets": {"clip_score": 0.3},
    "negative_reward_targets": {"hpsv2_score": 0.6},
    "seed": 23,
}
T5_WORDS = (
    "a an the of on in with and cat dog bird red blue green two three table sky big small photo picture drawing "
    "under left right top bottom house tree car person"
).split()

VARIANT_CASE = {
    "name": "variant_guided",
    "prompts": [0],
    "num_images_per_prompt": 1,
    "guidance_scale": 5.0,
    "num_inference_steps": 4,
    "reward_targets": {"clip_score": 0.9},
    "negative_reward_targets": {"clip_score": 0.1},
    "seed": 11,
}


def randomise(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Perturb every floating tensor so no part of the network is a no-op at initialisation
    (the self-conditioning output LayerNorm starts at zero)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.is_floating_point():
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
            if name.endswith("ln_previous_2.weight"):
                param.copy_(0.5 + 0.5 * torch.rand(param.shape, generator=generator))


def save_layout(
    folder: Path,
    network: torch.nn.Module,
    precond: torch.nn.Module,
    config: dict,
    uncond: np.ndarray,
    dtype: torch.dtype,
) -> None:
    from miro.models.postprocessing import VAEPostProcessing
    from miro.models.preprocessing import PrecomputedSDLatentPreconditioning
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for prefix, module in (
        ("network", network),
        ("preconditioning", precond),
        ("data_preprocessing", PrecomputedSDLatentPreconditioning(**config["data_preprocessing"])),
        ("postprocessing", VAEPostProcessing(**config["postprocessing"])),
    ):
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().contiguous()
            state[f"{prefix}.{name}"] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    np.save(folder / "uncond_embedding.npy", uncond)


def tiny_vae(folder: Path) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED + 7)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=2 * LATENT_SIZE,
    )
    vae.save_pretrained(folder, safe_serialization=True)
    return vae.eval()


class LookupTokenizer:
    """Stands in for the T5 tokenizer: a prompt "p<i>" becomes ids [i, i, ...] and the recorded mask."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def __call__(self, prompts, **_: object) -> dict:
        index = torch.tensor([int(p[1:]) for p in prompts])
        return {"input_ids": index[:, None].expand(-1, self.masks.shape[1]), "attention_mask": self.masks[index].long()}


class LookupEncoder(torch.nn.Module):
    """Stands in for FLAN-T5-XL: returns the recorded random embedding of each prompt."""

    def __init__(self, embeddings: torch.Tensor) -> None:
        super().__init__()
        self.embeddings = embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        class Output:
            last_hidden_state = self.embeddings[input_ids[:, 0]]

        return Output()


def record_pipeline(
    folder: Path,
    vae: torch.nn.Module,
    embeddings: torch.Tensor,
    masks: torch.Tensor,
    cases: list,
    out: dict,
    variant: str | None = None,
) -> None:
    pipe = load_their_pipeline(folder, vae, variant)
    pipe.tokenizer, pipe.text_encoder = LookupTokenizer(masks), LookupEncoder(embeddings)
    for case in cases:
        images, latents = run_their_case(pipe, [f"p{i}" for i in case["prompts"]], case)
        batch = len(case["prompts"]) * case["num_images_per_prompt"]
        noise = torch.randn(batch, 4, LATENT_SIZE, LATENT_SIZE, generator=torch.Generator().manual_seed(case["seed"]))
        out[f"{case['name']}.noise"] = noise
        out[f"{case['name']}.latents"] = latents
        out[f"{case['name']}.images"] = torch.from_numpy(np.ascontiguousarray(images))


def run_their_case(pipe, prompts: list[str], case: dict) -> tuple[np.ndarray, torch.Tensor]:
    """Their pipeline on one recorded case: its images, and the latents it handed to the VAE (captured by a
    hook on their post-processing, since their call returns only images)."""
    captured: list[torch.Tensor] = []
    hook = pipe.postprocessing.register_forward_pre_hook(
        lambda module, args: captured.append(args[0].detach().clone())
    )
    try:
        images = pipe(
            prompts,
            reward_targets=case["reward_targets"],
            negative_reward_targets=case["negative_reward_targets"],
            num_inference_steps=case["num_inference_steps"],
            guidance_scale=case["guidance_scale"],
            num_images_per_prompt=case["num_images_per_prompt"],
            generator=torch.Generator().manual_seed(case["seed"]),
            output_type="numpy",
        )
    finally:
        hook.remove()
    return images, captured[0].float()


def record_forward(
    network: torch.nn.Module,
    precond: torch.nn.Module,
    embeddings: torch.Tensor,
    masks: torch.Tensor,
    uncond: torch.Tensor,
    out: dict,
    generator: torch.Generator,
) -> dict:
    """``preconditioning(network, batch)`` on a batch of 3 (the third uses the negative text)."""
    b = 3
    text = torch.cat([embeddings[:2], torch.zeros(1, TEXT_LEN, TEXT_DIM)])
    text[2, :1] = uncond
    mask = torch.cat([masks[:2], torch.zeros(1, TEXT_LEN, dtype=torch.bool)])
    mask[2, 0] = True
    x = torch.randn(b, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
    t = torch.tensor([1.0, 0.37, 0.02])
    levels = torch.rand(b, len(ALL_KEYS), generator=generator)
    previous = torch.randn(b, 16, 64, generator=generator)
    inputs = {"x": x, "t": t, "text": text, "mask": mask, "levels": levels, "previous": previous}
    for name, value in inputs.items():
        out[f"forward.{name}"] = value
    for label, prev in (("zero_state", None), ("state", previous)):
        batch = {
            "y": x.clone(),
            "gamma": 1 - t,
            "previous_latents": prev,
            "text_tokens_embeddings": text,
            "text_tokens_mask": mask,
        }
        batch.update({f"{k}_coherence": levels[:, i] for i, k in enumerate(ALL_KEYS)})
        with torch.no_grad():
            velocity, latents, logvar = precond(network, batch, return_logvar=True)
        out[f"forward.{label}.velocity"] = velocity
        out[f"forward.{label}.latents"] = latents
        out[f"forward.{label}.logvar"] = logvar.flatten()
    return {"t": t.tolist(), "note": "gamma = 1 - t; the third sample uses the negative text"}


def convert_script_config(network: dict, max_text_len: int, precond: dict) -> dict:
    """config.json as ``build_clean_config`` of their convert script (miro/scripts/convert_and_upload_to_hf.py)
    writes it: the same sections and keys, in the same order."""
    return {
        "network": network,
        "preconditioning": {**precond, "do_normalization": True, "logvar_channels": 128, "logvar_mlp_layers": 0},
        "data_preprocessing": {
            "input_key_mean": f"vae_embeddings_mean_{8 * LATENT_SIZE}",
            "input_key_std": f"vae_embeddings_std_{8 * LATENT_SIZE}",
            "output_key_root": "x_0",
            "vae_sample": True,
            "channel_wise_normalisation": True,
            "model_type": "sdxl",
        },
        "postprocessing": {"channel_wise_normalisation": True, "model_type": "sdxl"},
        "scheduler": {"start": 1, "end": 0, "clip_min": 1e-9},
        "coherence_keys": list(network["coherence_keys"]),
        "sampler_defaults": {"num_steps": 50, "guidance_scale": 7.0, "sigma_data": precond["sigma_data"]},
        "data_resolution": LATENT_SIZE,
        "img_resolution": 8 * LATENT_SIZE,
        "max_text_len": max_text_len,
        "model_type": "sdxl",
        "vae_repo": "stabilityai/sdxl-vae",
        "text_encoder_repo": "google/flan-t5-xl",
    }


def tiny_t5(folder: Path):
    """A random T5 encoder of width CONCAT_TEXT_DIM and a word-level tokenizer (transformers layout)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *T5_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    torch.manual_seed(SEED + 29)
    config = T5Config(vocab_size=len(vocab), d_model=CONCAT_TEXT_DIM, d_kv=4, d_ff=32, num_layers=1, num_heads=4)
    model = T5EncoderModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return tokenizer, model


def record_direct(folder: Path, vae, embeddings: torch.Tensor, masks: torch.Tensor, out: dict) -> list:
    """Their ``flow_euler_sampler`` with the pipeline's arguments, a chosen negative text and autocast."""
    import copy

    from miro.models.sampler import flow_euler_sampler

    pipe = load_their_pipeline(folder, vae)
    keys = [f"{k}_coherence" for k in pipe.coherence_keys]
    positive = {f"{k}_coherence": DIRECT_TARGETS.get(k, 1.0) for k in pipe.coherence_keys}
    negative = {f"{k}_coherence": DIRECT_NEGATIVE.get(k, 0.0) for k in pipe.coherence_keys}
    recorded = []
    for case in DIRECT_CASES:
        generator = torch.Generator().manual_seed(case["seed"])
        b = len(case["prompts"])
        noise = torch.randn(b, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
        if case["name"] == "given_negative_text":
            negative_text = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=generator).expand(b, -1, -1).contiguous()
            out[f"{case['name']}.negative_prompt_embeds"] = negative_text
        else:
            negative_text = pipe.uncond_embedding[None].expand(b, -1, -1).contiguous()
        batch = {
            "y": noise.clone(),
            "previous_latents": None,
            "text_tokens_embeddings": embeddings[case["prompts"]].clone(),
            "text_tokens_mask": masks[case["prompts"]].clone(),
            **{k: torch.full((b,), positive[k]) for k in keys},
        }
        uncond = {
            "text_tokens_embeddings": negative_text,
            "text_tokens_mask": torch.ones(negative_text.shape[:2], dtype=torch.bool),
        }
        dtype = getattr(torch, case["autocast"]) if case["autocast"] else torch.float32
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            latents = flow_euler_sampler(
                lambda b: pipe.preconditioning(pipe.network, b),
                copy.copy(batch),
                num_steps=case["num_inference_steps"],
                scheduler=pipe.scheduler,
                conditioning_keys=["text_tokens"],
                uncond_tokens=uncond,
                cfg_rate=case["guidance_scale"],
                coherence_keys=keys,
                coherence_values=positive,
                uncoherence_values=negative,
            )
        out[f"{case['name']}.noise"] = noise
        out[f"{case['name']}.latents"] = latents.float()
        recorded.append({**case, "reward_targets": DIRECT_TARGETS, "negative_reward_targets": DIRECT_NEGATIVE})
    return recorded


def load_their_pipeline(folder: Path, vae, variant: str | None = None):
    import diffusers
    from miro import MiroPipeline

    original = diffusers.AutoencoderKL.from_pretrained
    diffusers.AutoencoderKL.from_pretrained = classmethod(lambda cls, *a, **k: vae)  # no hub access
    try:
        return MiroPipeline.from_pretrained(str(folder), variant=variant)
    finally:
        diffusers.AutoencoderKL.from_pretrained = original


def record_concat_variant(root: Path, vae, out: dict) -> dict:
    """The concat-tokens variant in ``concat-tokens/``, sampled by their pipeline from prompt strings."""
    from miro.models.networks.rin import CADRINTextCond
    from miro.models.preconditioning import FlowPrecond

    generator = torch.Generator().manual_seed(SEED + 31)
    torch.manual_seed(SEED + 31)
    precond_args = {"num_latents": CONCAT_NETWORK["num_latents"], "latents_dim": CONCAT_NETWORK["latents_dim"],
                    "sigma_data": 0.5, "do_gradnorm_reweighting": True}
    config = convert_script_config(CONCAT_NETWORK, CONCAT_TEXT_LEN, precond_args)
    network = CADRINTextCond(**config["network"]).eval()
    precond = FlowPrecond(**config["preconditioning"]).eval()
    randomise(network, generator)
    randomise(precond, generator)
    uncond = np.asarray(0.5 * torch.randn(1, CONCAT_TEXT_DIM, generator=generator).numpy(), dtype=np.float32)
    save_layout(root / "concat-tokens", network, precond, config, uncond, torch.float16)
    tokenizer, t5 = tiny_t5(root / "t5")
    pipe = load_their_pipeline(root, vae, variant="concat-tokens")
    pipe.tokenizer, pipe.text_encoder = tokenizer, t5
    case = CONCAT_CASE
    images, out[f"{case['name']}.latents"] = run_their_case(pipe, case["prompts"], case)
    out[f"{case['name']}.images"] = torch.from_numpy(np.ascontiguousarray(images))
    return {"name": "concat-tokens", "weights": "float16", "text_encoder": "t5/ (tiny random T5)", "case": case}


def main() -> None:
    import miro
    from miro.models.networks.rin import CADRINTextCond
    from miro.models.preconditioning import FlowPrecond
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/authors-reference"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)

    config = {
        "network": {**NETWORK, "coherence_keys": ALL_KEYS},
        "preconditioning": PRECONDITIONING,
        "data_preprocessing": {"channel_wise_normalisation": True, "model_type": "sdxl"},
        "postprocessing": {"channel_wise_normalisation": True, "model_type": "sdxl"},
        "data_resolution": LATENT_SIZE,
        "max_text_len": TEXT_LEN,
    }
    network, precond = CADRINTextCond(**config["network"]).eval(), FlowPrecond(**PRECONDITIONING).eval()
    randomise(network, generator)
    randomise(precond, generator)
    uncond = np.asarray(0.5 * torch.randn(1, TEXT_DIM, generator=generator).numpy(), dtype=np.float32)
    embeddings = torch.randn(len(PROMPT_LENGTHS), TEXT_LEN, TEXT_DIM, generator=generator)
    masks = torch.zeros(len(PROMPT_LENGTHS), TEXT_LEN, dtype=torch.bool)
    for i, length in enumerate(PROMPT_LENGTHS):
        masks[i, :length] = True
    save_layout(args.out, network, precond, config, uncond, torch.float32)

    variant_network_config = {
        **config["network"],
        "coherence_keys": ["clip_score"],
        "num_blocks": 1,
        "compute_heads": 4,
    }
    variant = {**config, "network": variant_network_config, "coherence_keys": ["clip_score"]}
    variant_network = CADRINTextCond(**variant["network"]).eval()
    variant_precond = FlowPrecond(**PRECONDITIONING).eval()
    randomise(variant_network, generator)
    randomise(variant_precond, generator)
    # Saved in float16: the authors' pipeline (and ours) load the rounded weights into float32.
    save_layout(args.out / "miro-only-clip", variant_network, variant_precond, variant, uncond, torch.float16)

    vae = tiny_vae(args.out / "vae")
    out: dict[str, torch.Tensor] = {"prompt_embeds": embeddings, "prompt_attention_mask": masks}
    forward_info = record_forward(network, precond, embeddings, masks, torch.from_numpy(uncond), out, generator)
    record_pipeline(args.out, vae, embeddings, masks, CASES, out)
    record_pipeline(args.out, vae, embeddings, masks, [VARIANT_CASE], out, variant="miro-only-clip")
    record_pipeline(args.out, vae, embeddings, masks, EXTRA_CASES, out)
    direct = record_direct(args.out, vae, embeddings, masks, out)
    concat = record_concat_variant(args.out, vae, out)
    save_file({k: v.contiguous() for k, v in out.items()}, str(args.out / "reference.safetensors"))
    description = {
        "recorded_with": f"miro-t2i {getattr(miro, '__version__', '0.1.4')}, torch {torch.__version__}",
        "script": "scripts/record_authors_reference.py",
        "reward_keys": ALL_KEYS,
        "forward": forward_info,
        "cases": CASES + EXTRA_CASES,
        "direct": direct,
        "variant": {"name": "miro-only-clip", "weights": "float16", "case": VARIANT_CASE},
        "concat_variant": concat,
        "vae": "vae/ (tiny random AutoencoderKL, 2x downsampling)",
    }
    (args.out / "reference.json").write_text(json.dumps(description, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
