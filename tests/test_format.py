"""Riffusion's image format, checked against a reference written independently from the facts in docs/format.md.

The reference uses numpy framing and FFTs and librosa's HTK mel filters, not our torch code.
"""

import librosa
import numpy as np
import pytest
import soundfile
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from spectrodiff import SpectrogramParams, audio_to_image, image_params, image_to_mel, waveform_to_mel
from spectrodiff.codec.convert import file_to_image, save_image
from spectrodiff.codec.image import mel_to_image, open_image
from spectrodiff.codec.mel import mel_filterbank, waveform_to_mel_streaming
from spectrodiff.codec.params import RIFFUSION_MAX_VALUE, ExifTag

from .conftest import signal

SR, HOP, WIN, NFFT = 44100, 441, 4410, 17640


def reference_mel(int16_channels: np.ndarray) -> np.ndarray:
    """Riffusion's mel magnitude of `(C, N)` int16-valued samples, from the format facts alone."""
    pad = NFFT // 2
    window = np.zeros(NFFT)
    window[(NFFT - WIN) // 2: (NFFT - WIN) // 2 + WIN] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    filters = librosa.filters.mel(sr=SR, n_fft=NFFT, n_mels=512, fmin=0, fmax=10000, htk=True, norm=None)
    out = []
    for channel in int16_channels.astype(np.float64):
        padded = np.pad(channel, pad, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, NFFT)[::HOP]
        out.append(filters @ np.abs(np.fft.rfft(frames * window, axis=-1)).T)
    return np.stack(out)


def reference_image(mel: np.ndarray) -> Image.Image:
    """Riffusion's image encoding of `(C, 512, T)`, EXIF written the way its converter writes it."""
    top = mel.max()
    pixels = (255 - np.power(mel / top, 0.25) * 255).astype(np.uint8)
    if len(pixels) == 1:
        image = Image.fromarray(pixels[0], mode="L").convert("RGB")
    else:
        image = Image.fromarray(np.stack([np.zeros_like(pixels[0]), pixels[0], pixels[1]], -1), mode="RGB")
    image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    exif = image.getexif()
    exif.update({11000: SR, 11005: len(pixels) == 2, 11010: 10, 11020: 100, 11030: 400, 11040: 512, 11050: 0,
                 11060: 10000, 11070: 0.25, 11080: float(top)})
    return image


def int16_file(tmp_path, audio: np.ndarray) -> tuple:
    """Write `(C, N)` float audio as 16-bit WAV; return the path and the exact int16 values it holds."""
    path = tmp_path / "clip.wav"
    soundfile.write(path, audio.T, SR, subtype="PCM_16")
    return path, soundfile.read(path, dtype="int16", always_2d=True)[0].T


def agreement(ours: Image.Image, theirs: Image.Image) -> float:
    """Fraction of pixel values within 1 grey level."""
    a, b = np.asarray(ours).astype(int), np.asarray(theirs).astype(int)
    assert a.shape == b.shape
    return float(np.mean(np.abs(a - b) <= 1))


def test_filterbank_matches_librosa_htk(params):
    ours = mel_filterbank(params).numpy().T
    theirs = librosa.filters.mel(sr=SR, n_fft=NFFT, n_mels=512, fmin=0, fmax=10000, htk=True, norm=None)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_params_defaults_are_riffusions(params):
    assert (params.hop_length, params.win_length, params.n_fft) == (HOP, WIN, NFFT)
    assert params.num_frequencies == 512 and params.max_frequency == 10000 and params.power_for_image == 0.25


@pytest.mark.parametrize("kind", ["chord", "drums", "noise"])
def test_mono_image_matches_reference(tmp_path, params, kind):
    path, samples = int16_file(tmp_path, signal(kind, 2.0))
    theirs = reference_image(reference_mel(samples))
    ours = file_to_image(path, params)
    assert ours.size == theirs.size == (1 + samples.shape[1] // HOP, 512)
    assert agreement(ours, theirs) >= 0.999
    assert dict(ours.getexif()).keys() == dict(theirs.getexif()).keys()
    assert ours.getexif()[11080] == pytest.approx(theirs.getexif()[11080], rel=1e-4)


def test_stereo_image_matches_reference(tmp_path, stereo_params):
    audio = np.concatenate([signal("chord", 2.0), signal("drums", 2.0)])
    path, samples = int16_file(tmp_path, audio)
    theirs = reference_image(reference_mel(samples))
    ours = file_to_image(path, stereo_params)
    assert agreement(ours, theirs) >= 0.999
    pixels = np.asarray(ours)
    assert pixels[..., 0].max() == 0, "stereo images keep R at zero"
    assert not np.array_equal(pixels[..., 1], pixels[..., 2])
    assert ours.getexif()[int(ExifTag.STEREO)] == 1


def test_stereo_file_to_mono_image_uses_channel_mean(tmp_path, params):
    audio = np.concatenate([signal("chord", 1.0), signal("noise", 1.0)])
    path, samples = int16_file(tmp_path, audio)
    theirs = reference_image(reference_mel(samples.mean(axis=0, keepdims=True)))
    assert agreement(file_to_image(path, params), theirs) >= 0.999


def test_width_is_one_column_per_hop(params):
    for n in (0, 1, 440, 441, 442, 8820, 8821, 44100):
        image = audio_to_image(np.zeros((1, n), np.float32) if n == 0 else signal("noise", n / SR)[:, :n], params)
        assert image.size == (1 + n // HOP, 512)


def test_low_frequencies_at_the_bottom(params):
    t = np.arange(SR) / SR
    image = np.asarray(audio_to_image((0.5 * np.sin(2 * np.pi * 200 * t))[None].astype(np.float32), params))
    darkest_row = int(np.argmin(image[:, :, 0].mean(axis=1)))
    assert darkest_row > 400, "a 200 Hz tone must be dark near the bottom of the image"


def test_riffusion_image_decodes_with_its_own_params(tmp_path):
    # An image made by Riffusion's code with non-default parameters, saved as its converter saves it.
    mel = np.random.default_rng(0).random((1, 256, 100)) * 1e6
    image = reference_image(mel)
    image.getexif().update({11040: 256, 11060: 8000})
    image.save(tmp_path / "riff.png", exif=image.getexif(), format="PNG")
    loaded = open_image(tmp_path / "riff.png")
    params, max_value = image_params(loaded)
    assert (params.num_frequencies, params.max_frequency, params.sample_rate) == (256, 8000, SR)
    assert max_value == pytest.approx(mel.max())
    decoded = image_to_mel(loaded, params, max_value).numpy()
    # 8-bit quantisation after the 0.25 power curve: the decoded magnitude tracks the original.
    assert np.corrcoef(decoded.ravel(), mel.ravel())[0, 1] > 0.99


def test_image_without_exif_uses_defaults_with_warning(tmp_path):
    Image.new("RGB", (64, 512), (128, 128, 128)).save(tmp_path / "plain.png")
    with pytest.warns(UserWarning, match="no spectrogram EXIF"):
        params, max_value = image_params(open_image(tmp_path / "plain.png"))
    assert params == SpectrogramParams() and max_value == RIFFUSION_MAX_VALUE


def test_decoding_inverts_encoding(params):
    mel = waveform_to_mel(torch.from_numpy(signal("chord", 1.0)), params)
    image = mel_to_image(mel, params)
    decoded = image_to_mel(image, params, float(mel.max()))
    # Pixel truncation error after the power curve is at most one grey level.
    step = (1 - (1 - 1 / 255) ** 4) * float(mel.max())
    assert float((decoded - mel).abs().max()) <= step * 1.01


def test_the_tensor_and_image_faces_are_one_codec(params, stereo_params):
    """A VAE-like output laid out as a spectrogram (mono: the mean of its channels; stereo: R = 0) decodes to the
    same mel as its 8-bit PNG does, to within half a grey level of the curve; and the laid-out image is grey."""
    from spectrodiff.codec.image import layout, pixels_to_image, pixels_to_mel

    pixels = torch.rand(3, 512, 16, generator=torch.Generator().manual_seed(0))
    for p in (params, stereo_params):
        image = pixels_to_image(layout(pixels, p), p, 1.0)
        direct, decoded = pixels_to_mel(layout(pixels, p), p, 1.0), image_to_mel(image, p, 1.0)
        half_level = 1 - (1 - 0.5 / 255) ** (1 / p.power_for_image)
        assert direct.shape == (p.channels, 512, 16) and float((direct - decoded).abs().max()) <= half_level
    grey = np.asarray(pixels_to_image(layout(pixels, params), params, 1.0))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert not np.array_equal(grey[..., 0], np.asarray(pixels_to_image(pixels, params, 1.0))[..., 1])


def test_mono_decode_reads_red_and_stereo_reads_green_blue(params, stereo_params):
    pixels = np.zeros((512, 8, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 0, 128, 255
    image = Image.fromarray(pixels, "RGB")
    assert float(image_to_mel(image, params, 1.0).min()) == 1.0  # R = 0 -> full scale
    left, right = image_to_mel(image, stereo_params, 1.0)
    assert float(right.max()) == 0.0 and 0 < float(left.mean()) < 1


def test_exif_round_trip_through_png(tmp_path, stereo_params):
    image = audio_to_image(np.concatenate([signal("chord", 0.5), signal("noise", 0.5)]), stereo_params)
    save_image(tmp_path / "x.png", image)
    params, _ = image_params(open_image(tmp_path / "x.png"))
    assert params == stereo_params


def test_silence_encodes_without_nan(params):
    image = audio_to_image(np.zeros((1, SR), np.float32), params)
    assert np.asarray(image).min() == 255 and image.getexif()[11080] == 0.0


def test_streaming_mel_equals_whole(params):
    audio = torch.from_numpy(signal("mix", 3.0))
    blocks = torch.split(audio, 10007, dim=-1)
    torch.testing.assert_close(waveform_to_mel_streaming(blocks, params), waveform_to_mel(audio, params),
                               rtol=1e-5, atol=1e-2)


def test_mel_is_batched_over_leading_dims(params):
    audio = torch.from_numpy(np.stack([signal("chord", 0.5), signal("noise", 0.5)]))  # (2, 1, N)
    batched = waveform_to_mel(audio, params)
    assert batched.shape == (2, 1, 512, 1 + audio.shape[-1] // HOP)
    torch.testing.assert_close(batched[1], waveform_to_mel(audio[1], params))


def test_params_are_a_diffusers_component(tmp_path):
    """The codec's parameters are plain Python (no diffusers import); a model folder carries them through the
    generation package's SpectrogramComponent, which loads back equal to them."""
    from spectrodiff.generation.components import SpectrogramComponent

    class Holder(DiffusionPipeline):
        def __init__(self, spectrogram):
            super().__init__()
            self.register_modules(spectrogram=spectrogram)

    params = SpectrogramParams(stereo=True, max_frequency=8000)
    Holder(SpectrogramComponent.of(params)).save_pretrained(tmp_path)
    assert (tmp_path / "spectrogram" / "spectrogram_config.json").exists()
    loaded = Holder.from_pretrained(tmp_path).spectrogram
    assert isinstance(loaded, SpectrogramParams) and loaded == params and loaded.sample_rate == 44100
    assert SpectrogramComponent.from_pretrained(tmp_path, subfolder="spectrogram") == loaded
    assert SpectrogramParams.from_dict(loaded.config) == params == SpectrogramParams.from_dict(params.to_dict())
    with pytest.raises(TypeError, match="read-only"):
        params.config["stereo"] = False
