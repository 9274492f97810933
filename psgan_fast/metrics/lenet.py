"""The MNIST classifier behind the `mnist-lenet` feature extractor.

A LeNet-style CNN, small enough to train on a CPU in minutes
(`scripts/train_mnist_lenet.py`, ≥ 99% test accuracy) and to ship in the
package (`psgan_fast/weights/mnist_lenet.safetensors`, ~0.5 MB):

    conv 5x5, 32 → ReLU → max-pool 2      28 → 14
    conv 3x3, 64 → ReLU → max-pool 2      14 → 7
    conv 3x3, 64 → ReLU → max-pool 2       7 → 3
    fc 576 → 128                           the 128-d features (FID, KID)
    ReLU → dropout → fc 128 → 10           the logits (IS, class histograms)

The features are the penultimate layer, as Inception's pool3 features are
for the standard FID, taken *before* its ReLU: 46 of the 128 ReLU units
never fire on MNIST, so post-ReLU features would have a singular covariance
with 46 empty dimensions, while the pre-activations vary in all 128. They
are divided by FEATURE_SCALE = 10, which brings their RMS on MNIST to ~0.9:
KID's polynomial kernel (xᵀy/d + 1)³ assumes features of order 1 (raw, the
kernel values reach 1e6 and KID's spread swamps its mean). FID scales by
1/100 with it; it is a fixed part of the extractor's definition.

The input is a float image in [0, 1], shape [N, 1, 28, 28]; the MNIST
mean/std normalisation happens inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
FEATURE_DIM = 128
NUM_CLASSES = 10
IMAGE_SIZE = 28
FEATURE_SCALE = 10.0


class MNISTLeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(64 * 3 * 3, FEATURE_DIM)
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [N, 1, 28, 28] in [0, 1] -> (features [N, 128], logits [N, 10])."""
        x = (x - MNIST_MEAN) / MNIST_STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        pre = self.fc1(x.flatten(1))
        return pre / FEATURE_SCALE, self.fc2(self.dropout(F.relu(pre)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]
