"""The TensorFlow CIFAR-10 tutorial network the chapter walks through, on fastconv.

Layer for layer (``cifar10.py`` of the tutorial, ``inference()`` and ``loss()``)::

    input 24x24x3
    conv1   5x5x3x64 SAME + bias 0.0, ReLU          weights N(0, 5e-2) truncated
    pool1   max 3x3 stride 2 SAME                    24 -> 12
    norm1   LRN depth_radius 4, bias 1.0, alpha 0.001/9, beta 0.75
    conv2   5x5x64x64 SAME + bias 0.1, ReLU          weights N(0, 5e-2) truncated
    norm2   LRN (as norm1)
    pool2   max 3x3 stride 2 SAME                    12 -> 6
    local3  2304 -> 384 + bias 0.1, ReLU             N(0, 0.04), weight decay 0.004
    local4  384 -> 192 + bias 0.1, ReLU              N(0, 0.04), weight decay 0.004
    softmax_linear 192 -> 10 + bias 0.0              N(0, 1/192)

    loss = mean softmax cross-entropy + sum of wd * sum(w**2) / 2

Arrays are channels-first (``(N, C, H, W)``, conv weights ``(O, C, KH, KW)``);
the dense weights are ``(in, out)`` as TF keeps them.  Only the order of the
2304 flattened features differs from TF's NHWC, a fixed permutation of
local3's rows.  Parameters are a plain dict of numpy arrays; every function
here is pure, so towers, checkpoints and tests can share them freely.
:class:`Architecture` lets the input change (the digits adaptation uses 8x8x1).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from . import layers

#: parameter names, in the order of the layers
PARAM_NAMES = ("conv1/weights", "conv1/biases", "conv2/weights", "conv2/biases",
               "local3/weights", "local3/biases", "local4/weights", "local4/biases",
               "softmax_linear/weights", "softmax_linear/biases")


@dataclass(frozen=True)
class Architecture:
    """Sizes and constants of the network; the defaults are the tutorial's.

    Examples
    --------
    >>> Architecture().flat_features
    2304
    >>> Architecture(input_shape=(1, 8, 8)).flat_features
    256
    """

    input_shape: tuple = (3, 24, 24)     # C, H, W
    num_classes: int = 10
    conv_channels: tuple = (64, 64)
    conv_kernel: int = 5
    local_units: tuple = (384, 192)
    pool_kernel: int = 3
    pool_stride: int = 2
    lrn_depth_radius: int = 4
    lrn_bias: float = 1.0
    lrn_alpha: float = 0.001 / 9.0
    lrn_beta: float = 0.75
    conv_stddev: float = 5e-2
    local_stddev: float = 0.04
    weight_decay: float = 0.004

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "conv_channels", tuple(int(v) for v in self.conv_channels))
        object.__setattr__(self, "local_units", tuple(int(v) for v in self.local_units))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (channels, height, width), got "
                             f"{self.input_shape}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")

    @property
    def pooled_spatial(self) -> tuple:
        """Height and width after the two SAME poolings (ceil(size / stride) each)."""
        def pooled(n):
            for _ in range(2):
                n = -(-n // self.pool_stride)
            return n
        return tuple(pooled(n) for n in self.input_shape[1:])

    @property
    def flat_features(self) -> int:
        """Inputs of local3: channels of conv2 times the pooled spatial size."""
        return self.conv_channels[1] * math.prod(self.pooled_spatial)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Architecture":
        return cls(**values)


CIFAR10 = Architecture()


def param_shapes(arch: Architecture = CIFAR10) -> dict:
    """Every parameter's shape.

    Examples
    --------
    >>> param_shapes()["local3/weights"]
    (2304, 384)
    """
    c, _, _ = arch.input_shape
    c1, c2 = arch.conv_channels
    h3, h4 = arch.local_units
    k = arch.conv_kernel
    return {"conv1/weights": (c1, c, k, k), "conv1/biases": (c1,),
            "conv2/weights": (c2, c1, k, k), "conv2/biases": (c2,),
            "local3/weights": (arch.flat_features, h3), "local3/biases": (h3,),
            "local4/weights": (h3, h4), "local4/biases": (h4,),
            "softmax_linear/weights": (h4, arch.num_classes),
            "softmax_linear/biases": (arch.num_classes,)}


def truncated_normal(rng: np.random.Generator, shape, stddev: float, dtype=np.float32):
    """Normal samples with anything beyond two standard deviations drawn again.

    TensorFlow's ``truncated_normal_initializer``.

    Examples
    --------
    >>> w = truncated_normal(np.random.default_rng(0), (1000,), 0.5)
    >>> bool(np.abs(w).max() <= 1.0)
    True
    """
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2
    return (values * stddev).astype(dtype)


def init_params(seed=0, arch: Architecture = CIFAR10, dtype=np.float32) -> dict:
    """The tutorial's initialisation: truncated normal weights, constant biases.

    Examples
    --------
    >>> params = init_params(0)
    >>> params["conv2/biases"][:2], params["conv1/weights"].dtype
    (array([0.1, 0.1], dtype=float32), dtype('float32'))
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    shapes = param_shapes(arch)
    stddevs = {"conv1": arch.conv_stddev, "conv2": arch.conv_stddev,
               "local3": arch.local_stddev, "local4": arch.local_stddev,
               "softmax_linear": 1.0 / arch.local_units[1]}
    biases = {"conv1": 0.0, "conv2": 0.1, "local3": 0.1, "local4": 0.1, "softmax_linear": 0.0}
    params = {}
    for layer, stddev in stddevs.items():
        params[f"{layer}/weights"] = truncated_normal(rng, shapes[f"{layer}/weights"], stddev,
                                                      dtype)
        params[f"{layer}/biases"] = np.full(shapes[f"{layer}/biases"], biases[layer], dtype)
    return params


#: layers whose weights carry the L2 weight decay
DECAYED = ("local3/weights", "local4/weights")


def forward(params: dict, images: np.ndarray, arch: Architecture = CIFAR10):
    """Logits for ``images`` (N, C, H, W), and the activations the backward pass needs."""
    x = np.asarray(images, dtype=params["conv1/weights"].dtype)
    pad = layers.same_pairs(arch.input_shape[1:], arch.conv_kernel)
    lrn_args = (arch.lrn_depth_radius, arch.lrn_bias, arch.lrn_alpha, arch.lrn_beta)
    r1 = layers.relu(layers.conv_forward(x, params["conv1/weights"], params["conv1/biases"], pad))
    p1, idx1 = layers.max_pool_same(r1, arch.pool_kernel, arch.pool_stride)
    n1 = layers.lrn(p1, *lrn_args)
    pad2 = layers.same_pairs(n1.shape[2:], arch.conv_kernel)
    r2 = layers.relu(layers.conv_forward(n1, params["conv2/weights"], params["conv2/biases"],
                                         pad2))
    n2 = layers.lrn(r2, *lrn_args)
    p2, idx2 = layers.max_pool_same(n2, arch.pool_kernel, arch.pool_stride)
    flat = p2.reshape(len(x), -1)
    h3 = layers.relu(layers.dense_forward(flat, params["local3/weights"],
                                          params["local3/biases"]))
    h4 = layers.relu(layers.dense_forward(h3, params["local4/weights"], params["local4/biases"]))
    logits = layers.dense_forward(h4, params["softmax_linear/weights"],
                                  params["softmax_linear/biases"])
    cache = dict(x=x, pad=pad, pad2=pad2, r1_shape=r1.shape, p1=p1, idx1=idx1, n1=n1, r2=r2, n2=n2,
                 idx2=idx2, p2_shape=p2.shape, flat=flat, h3=h3, h4=h4)
    return logits, cache


def backward(params: dict, cache: dict, grad_logits: np.ndarray,
             arch: Architecture = CIFAR10) -> dict:
    """Gradients of the data term for every parameter (weight decay not included)."""
    lrn_args = (arch.lrn_depth_radius, arch.lrn_bias, arch.lrn_alpha, arch.lrn_beta)
    grads = {}
    g, grads["softmax_linear/weights"], grads["softmax_linear/biases"] = layers.dense_backward(
        cache["h4"], params["softmax_linear/weights"], grad_logits)
    g = layers.relu_backward(cache["h4"], g)
    g, grads["local4/weights"], grads["local4/biases"] = layers.dense_backward(
        cache["h3"], params["local4/weights"], g)
    g = layers.relu_backward(cache["h3"], g)
    g, grads["local3/weights"], grads["local3/biases"] = layers.dense_backward(
        cache["flat"], params["local3/weights"], g)
    g = layers.max_pool_backward(g.reshape(cache["p2_shape"]), cache["idx2"], cache["n2"].shape)
    g = layers.lrn_backward(cache["r2"], g, *lrn_args)
    g = layers.relu_backward(cache["r2"], g)
    g, grads["conv2/weights"], grads["conv2/biases"] = layers.conv_backward(
        cache["n1"], params["conv2/weights"], g, cache["pad2"])
    g = layers.lrn_backward(cache["p1"], g, *lrn_args)
    # conv1's ReLU, applied before un-pooling: the gradient reaches only the pooled
    # maxima, where r1 equals p1, so masking with p1 > 0 is exact and 4x smaller
    g = layers.relu_backward(cache["p1"], g)
    g = layers.max_pool_backward(g, cache["idx1"], cache["r1_shape"])
    _, grads["conv1/weights"], grads["conv1/biases"] = layers.conv_backward(
        cache["x"], params["conv1/weights"], g, cache["pad"], need_input=False)
    return grads


def weight_decay_loss(params: dict, arch: Architecture = CIFAR10) -> float:
    """``sum of wd * sum(w**2) / 2`` over the decayed weights (TF's ``l2_loss``)."""
    return float(sum(arch.weight_decay * 0.5 * np.dot(params[n].ravel(), params[n].ravel())
                     for n in DECAYED))


def loss_and_grads(params: dict, images: np.ndarray, labels: np.ndarray,
                   arch: Architecture = CIFAR10):
    """Total loss (mean cross-entropy + weight decay) and its gradient for every parameter.

    Examples
    --------
    >>> arch = Architecture(input_shape=(1, 8, 8))
    >>> params = init_params(0, arch)
    >>> x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    >>> loss, grads = loss_and_grads(params, x, np.array([0, 1, 2, 3]), arch)
    >>> round(loss, 2), grads["conv1/weights"].shape   # ln(10) + weight decay 0.43
    (2.73, (64, 1, 5, 5))
    """
    logits, cache = forward(params, images, arch)
    loss, grad_logits = layers.softmax_cross_entropy(logits, np.asarray(labels))
    grads = backward(params, cache, grad_logits, arch)
    for name in DECAYED:
        grads[name] += arch.weight_decay * params[name]
    return loss + weight_decay_loss(params, arch), grads


def predict(params: dict, images: np.ndarray, arch: Architecture = CIFAR10,
            batch_size: int = 500) -> np.ndarray:
    """Predicted class of every image, in batches."""
    out = [forward(params, images[i:i + batch_size], arch)[0].argmax(axis=1)
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def accuracy(params: dict, images: np.ndarray, labels: np.ndarray,
             arch: Architecture = CIFAR10) -> float:
    """Fraction of ``images`` classified as ``labels``."""
    if len(images) == 0:
        return float("nan")
    return float(np.mean(predict(params, images, arch) == np.asarray(labels)))
