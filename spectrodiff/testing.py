"""Tiny, randomly initialised pipelines built in code (no network), for tests and quick experiments; and a probe of
what a command imports."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import BertConfig, BertModel, BertTokenizerFast, CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .codec.params import SpectrogramParams
from .generation.pipeline import SpectrodiffPipeline

TEXT_DIM = 32
HEAVY_LIBRARIES = ("torch", "diffusers", "transformers", "peft")
# Small mel images keep tests fast; the parameters travel with the model like any other.
TINY_PARAMS = dict(num_frequencies=64)


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """Byte-level CLIP tokenizer with no merges: every character is a token."""
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_bert_tokenizer() -> BertTokenizerFast:
    """WordPiece tokenizer over lower-case letters and digits, as MiniLM-style encoders use."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    tokens += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, model_max_length=64)


def build_tiny_pipeline(
    params: SpectrogramParams | None = None, text_encoder: str = "clip", seed: int = 0
) -> SpectrodiffPipeline:
    """A SpectrodiffPipeline with a ~0.8M-parameter UNet, a 4-level VAE (factor 8) and a 2-layer text encoder.

    Args:
        params: spectrogram parameters (default: 64 mel bins, else Riffusion's).
        text_encoder: "clip" (Stable Diffusion layout) or "bert" (a MiniLM-style encoder with attention mask).
    """
    torch.manual_seed(seed)
    params = params or SpectrogramParams(**TINY_PARAMS)
    if text_encoder == "clip":
        tokenizer = tiny_clip_tokenizer()
        encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    elif text_encoder == "bert":
        tokenizer = tiny_bert_tokenizer()
        encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=37,
                                       num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64))
    else:
        raise ValueError(f"text_encoder must be 'clip' or 'bert', not {text_encoder!r}")
    unet = UNet2DConditionModel(
        sample_size=(params.num_frequencies // 8, 64), in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_DIM, attention_head_dim=8,
        norm_num_groups=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=params.num_frequencies)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = SpectrodiffPipeline(vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                               spectrogram=params)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def heavy_imports(*args: str, cwd=None) -> list[str]:
    """Which of HEAVY_LIBRARIES the command line `spectrodiff ARGS` imports, run in a new process (it may fail:
    importing is what is measured)."""
    probe = ("import json, sys\nfrom spectrodiff.cli import main\ntry:\n    main()\nfinally:\n"
             f"    print(json.dumps(sorted(m for m in {HEAVY_LIBRARIES!r} if m in sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    return json.loads(done.stderr.strip().splitlines()[-1])
