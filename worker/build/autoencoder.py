"""The pretraining autoencoder: the spec's encoder plus a decoder that mirrors its Dense
layers, untied (plain layers) or tied (the transposed encoder kernels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from models.spec.transfer import PretrainJobSpec
from worker.build.model import build_layer, build_model


@keras.saving.register_keras_serializable(package="netkiln")
class TiedAutoencoder(keras.Model):
    """Decoder layer i computes act(z · Wᵀ + b) with W the kernel of the mirrored encoder
    Dense: half the weights of an untied autoencoder, and the decoder cannot drift from
    the encoder (Géron, ch. 17). Only the decoder biases are its own weights."""

    def __init__(
        self,
        encoder: keras.Sequential,
        decoder_activations: Sequence[str | None],
        target_shape: list[int],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder_activations = list(decoder_activations)
        self.target_shape = list(target_shape)
        self.mirrored = [
            layer for layer in reversed(encoder.layers) if isinstance(layer, keras.layers.Dense)
        ]
        self.decoder_biases = [
            self.add_weight(
                shape=(int(dense.kernel.shape[0]),), initializer="zeros", name=f"decoder_bias_{i}"
            )
            for i, dense in enumerate(self.mirrored)
        ]

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        codings = self.encoder(inputs, training=training)
        for dense, bias, activation in zip(
            self.mirrored, self.decoder_biases, self.decoder_activations, strict=True
        ):
            codings = keras.activations.get(activation or "linear")(
                ops.matmul(codings, ops.transpose(dense.kernel)) + bias
            )
        return ops.reshape(codings, (-1, *self.target_shape))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder_activations": self.decoder_activations,
            "target_shape": self.target_shape,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TiedAutoencoder:
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        return cls(encoder, **config)


def build_autoencoder(spec: PretrainJobSpec) -> keras.Model:
    encoder = build_model(spec.encoder, name="encoder")
    if spec.tied_weights:
        activations = [activation for _, activation in spec.mirrored_dense()]
        model = TiedAutoencoder(encoder, activations, spec.encoder.input_shape, name="autoencoder")
        model.build((None, *spec.encoder.input_shape))
        return model
    return keras.Sequential(
        [
            keras.Input(shape=tuple(spec.encoder.input_shape)),
            *encoder.layers,
            *(build_layer(layer) for layer in spec.decoder_layers()),
        ],
        name="autoencoder",
    )


def encoder_of(autoencoder: keras.Model, spec: PretrainJobSpec) -> keras.Model:
    """The trained encoder as a plain Sequential: the pretrain job's model, and a base for
    transfer jobs."""
    if isinstance(autoencoder, TiedAutoencoder):
        return autoencoder.encoder
    layers = autoencoder.layers[: len(spec.encoder.expanded_layers)]
    return keras.Sequential(
        [keras.Input(shape=tuple(spec.encoder.input_shape)), *layers], name="encoder"
    )
