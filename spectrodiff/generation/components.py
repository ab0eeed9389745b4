"""The spectrogram parameters and the neural vocoder as diffusers pipeline components.

The codec's `SpectrogramParams` and the vocoding package's `NeuralVocoder` are plain Python and torch, so that the
codec commands and `image-to-audio` never import diffusers. A model folder carries them as its `spectrogram/` and
`vocoder/` components through these subclasses, `SpectrogramComponent` and `VocoderComponent`, which add diffusers'
config and weight loading and saving (the pattern diffusers' own `Mel` component uses for the former).

Folders saved before the components had names of their own record `["spectrodiff.generation.components",
"SpectrogramParams"]` (and "NeuralVocoder") in model_index.json: those names resolve here to the components
(`RENAMED`), and folders saved before the package had subfolders name `spectrodiff.params` and
`spectrodiff.vocoder`, which resolve through `spectrodiff._legacy`.
"""

from __future__ import annotations

# diffusers finds a component's loader by the base classes importable from the component's module: keep these here.
from diffusers import ConfigMixin, ModelMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config

from ..codec import params as codec_params
from ..vocoding import vocoder as vocoding_vocoder

__all__ = ["ConfigMixin", "ModelMixin", "SchedulerMixin", "SpectrogramComponent", "VocoderComponent"]


class SpectrogramComponent(codec_params.SpectrogramParams, ConfigMixin, SchedulerMixin):
    """`spectrodiff.codec.params.SpectrogramParams` as a model folder's `spectrogram/` component: `save_pretrained`
    and `from_pretrained(folder, subfolder="spectrogram")`. It subclasses `SchedulerMixin` only for that
    config-based loading and saving."""

    config_name = codec_params.SpectrogramParams.config_name

    @register_to_config
    def __init__(self, sample_rate: int = 44100, stereo: bool = False, step_size_ms: int = 10,
                 window_duration_ms: int = 100, padded_duration_ms: int = 400, num_frequencies: int = 512,
                 min_frequency: int = 0, max_frequency: int = 10000, power_for_image: float = 0.25,
                 columns_per_beat: int | None = None, tempo: float | None = None):
        super().__init__(sample_rate, stereo, step_size_ms, window_duration_ms, padded_duration_ms, num_frequencies,
                         min_frequency, max_frequency, power_for_image, columns_per_beat, tempo)

    @classmethod
    def of(cls, params: codec_params.SpectrogramParams) -> SpectrogramComponent:
        """The component holding `params`."""
        return params if isinstance(params, cls) else cls(**params.to_dict())


class VocoderComponent(vocoding_vocoder.NeuralVocoder, ModelMixin, ConfigMixin):
    """`spectrodiff.vocoding.vocoder.NeuralVocoder` as a diffusers model: a model folder's `vocoder/` component,
    and what `train-vocoder` trains and saves."""

    config_name = vocoding_vocoder.NeuralVocoder.config_name

    @register_to_config
    def __init__(self, spectrogram: dict | None = None, dim: int = 384, intermediate_dim: int = 1152,
                 num_layers: int = 8, refine_iterations: int = 0, bass_refine_iterations: int = 0):
        super().__init__(spectrogram, dim, intermediate_dim, num_layers, refine_iterations, bass_refine_iterations)


# The names saved model folders give the components, as model_index.json and config files record them.
RENAMED = {"SpectrogramParams": SpectrogramComponent, "NeuralVocoder": VocoderComponent}


def __getattr__(name: str) -> type:
    """A saved folder's old name of a component class (`RENAMED`): diffusers loads a component by getattr on its
    module."""
    if name in RENAMED:
        return RENAMED[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
