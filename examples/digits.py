"""The digits data the MNIST-style examples use: scikit-learn's bundled 8x8 handwritten digits (1,797
images, offline), split the same way by the exporter and the client so the client measures held-out data."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

IMAGE_PIXELS = 64
NUM_CLASSES = 10


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels); images float32 in [0, 1]."""
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    cut = 1300
    return images[:cut], labels[:cut], images[cut:], labels[cut:]
