"""Training options shared by the heads (serving side) and edged.learn (training side). No TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClassifierOptions:
    hidden: int = 128
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 60
    patience: int = 10
    val_fraction: float = 0.2
    min_per_class: int = 2
    seed: int = 0
    augment_copies: int = 4  # augmented copies of each training frame, embedded by the backbone
    refit_all: bool = True  # after early stopping picks the epochs, retrain on train + validation rows
    # phase 2: fine-tune the top of the backbone on stored frames
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 20
    fine_tune_learning_rate: float = 2e-4  # bench fewshot: all 27 conv layers, 30 epochs, 2e-4 -> 0.955 at 20 shots
    fine_tune_batch_size: int = 16


@dataclass
class BoxOptions:
    loss: str = "giou"  # "mse": the seed's scaled MSE on (indicator, box); "giou": MSE + (1 - GIoU) on the box
    hidden: int = 128
    learning_rate: float = 1e-3
    batch_size: int = 16
    epochs: int = 30
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 10
    fine_tune_learning_rate: float = 2e-4
    augment: bool = True
    val_fraction: float = 0.2
    seed: int = 0
    # Layer whose feature map the box head reads; "auto" = the backbone's cut. conv_pw_11_relu (an 8x8
    # grid at 128 px) measured better on raccoon photos (test IoU 0.727 vs 0.676), conv_pw_13_relu on
    # two-class synthetic scenes (0.846; one pw_11 run there failed to train).
    feature_layer: str = "auto"
