"""The spec shown in the OpenAPI docs; ``examples/bn_after_activation.json`` is the same
document (a test keeps them equal)."""

from typing import Any

BN_AFTER_ACTIVATION: dict[str, Any] = {
    "name": "bn-after-activation",
    "kind": "train",
    "seed": 42,
    "dataset": {"name": "fashion_mnist", "preprocessing": "scale"},
    "model": {
        "input_shape": [28, 28],
        "layers": [
            {"type": "Flatten"},
            {"type": "BatchNormalization"},
            {"type": "Dense", "units": 300, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "BatchNormalization"},
            {"type": "Dense", "units": 100, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "BatchNormalization"},
            {"type": "Dense", "units": 10, "activation": "softmax"},
        ],
    },
    "compile": {
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "SGD", "learning_rate": 0.001, "momentum": 0.9},
    },
    "fit": {"epochs": 10, "batch_size": 32, "validation_split": 0.1},
}
