"""The spec shown in the OpenAPI docs; ``examples/bn_after_activation.json`` is the same
document (a test keeps them equal). And the small digits job that the end-to-end tests and
the benchmarks train."""

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

#: A small MLP on scikit-learn's bundled 8×8 digits (1,797 images, nothing to download),
#: 2,538 parameters: the job the end-to-end tests and the benchmarks train, seconds a run.
DIGITS_SPEC: dict[str, Any] = {
    "name": "digits-bn",
    "seed": 7,
    "dataset": {"name": "digits", "preprocessing": "standardize"},
    "model": {
        "input_shape": [8, 8],
        "layers": [
            {"type": "Flatten"},
            {"type": "Dense", "units": 32, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "BatchNormalization"},
            {"type": "Dropout", "rate": 0.1},
            {"type": "Dense", "units": 10, "activation": "softmax"},
        ],
    },
    "compile": {
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "SGD", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    },
    "fit": {"epochs": 4, "batch_size": 32, "validation_split": 0.1},
}
