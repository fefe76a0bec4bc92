"""The cloud-screening network and its training, in plain numpy (no deep-learning framework).

The network is a small fully convolutional per-pixel classifier with a tile-level head::

    tiles [N,4,H,W] reflectance
      -> (x - band_mean) / band_std                      normalise
      -> Conv 3x3, 4 -> C1, pad 1, ReLU                  spectra and a pixel's neighbours
      -> Conv 1x1, C1 -> C2, ReLU                        h
      -> Conv 1x1, C2 -> 1, Sigmoid                      per-pixel P(cloud)   [N,1,H,W]
      -> mean over pixels                                cloud_fraction       [N,1]
    concat(cloud_fraction, mean over pixels of h)        [N, 1+C2]
      -> Gemm 1+C2 -> 2                                  logits, softmax -> probabilities

Trained on two losses at once: cross-entropy of the tile class, and (weight
``pixel_loss_weight``) binary cross-entropy of each pixel against the generator's cloud
mask, so ``cloud_fraction`` is an estimate of the real cloud fraction and not just a
hidden feature. A 1x1 convolution is a dense layer applied to every pixel, and the 3x3
one is a dense layer over each pixel's 3x3x4 neighbourhood (im2col), so the backward
pass is matrix products; only the first layer needs its im2col matrix.

Optimiser: Adam (Kingma & Ba, 2015) with the paper's defaults except the step size.
Everything draws from one ``numpy.random.Generator`` seeded by the caller, so a
training run is a pure function of (data, config, seed) on one machine; across
machines the BLAS may round differently in the last bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TrainConfig:
    conv1_channels: int = 12
    conv2_channels: int = 8
    epochs: int = 30
    batch_tiles: int = 64
    learning_rate: float = 3e-3
    pixel_loss_weight: float = 0.5
    weight_decay: float = 1e-4


@dataclass
class CloudNet:
    """Weights in ONNX layouts (Conv ``[out, in, kh, kw]``, Gemm ``B`` as ``[out, in]``)."""

    band_mean: np.ndarray  # [4]
    band_std: np.ndarray  # [4]
    w1: np.ndarray  # [C1, 4, 3, 3]
    b1: np.ndarray  # [C1]
    w2: np.ndarray  # [C2, C1, 1, 1]
    b2: np.ndarray  # [C2]
    w3: np.ndarray  # [1, C2, 1, 1]
    b3: np.ndarray  # [1]
    wh: np.ndarray  # [2, 1 + C2]
    bh: np.ndarray  # [2]
    history: list[dict[str, float]] = field(default_factory=list)

    def params(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("w1", "b1", "w2", "b2", "w3", "b3", "wh", "bh")}

    def forward(self, tiles: np.ndarray) -> dict[str, np.ndarray]:
        """The same arithmetic as the exported ONNX graph (up to float rounding)."""
        return _forward(self, tiles)[0]


def train(tiles: np.ndarray, labels: np.ndarray, cloud_mask: np.ndarray, seed: int, config: TrainConfig = TrainConfig()) -> CloudNet:
    """Fit a :class:`CloudNet` to ``tiles`` [n,4,H,W], ``labels`` [n] (0/1), ``cloud_mask`` [n,H,W]."""
    rng = np.random.default_rng(seed)
    x = np.asarray(tiles, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    mask = np.asarray(cloud_mask, dtype=np.float32)
    n, bands = x.shape[:2]
    c1, c2 = config.conv1_channels, config.conv2_channels

    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    net = CloudNet(
        band_mean=x.mean(axis=(0, 2, 3)).astype(np.float32),
        band_std=x.std(axis=(0, 2, 3)).astype(np.float32),
        w1=he((c1, bands, 3, 3), bands * 9),
        b1=np.zeros(c1, np.float32),
        w2=he((c2, c1, 1, 1), c1),
        b2=np.zeros(c2, np.float32),
        w3=(rng.normal(size=(1, c2, 1, 1)) * np.sqrt(1.0 / c2)).astype(np.float32),
        b3=np.zeros(1, np.float32),
        wh=(rng.normal(size=(2, 1 + c2)) * 0.1).astype(np.float32),
        bh=np.zeros(2, np.float32),
    )
    adam_m = {k: np.zeros_like(v) for k, v in net.params().items()}
    adam_v = {k: np.zeros_like(v) for k, v in net.params().items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    # im2col of the whole set once: batches then gather whole tiles' rows (a cheap copy)
    # instead of re-laying out 3x3 windows every step, which was a fifth of the time
    cols_all = _im2col(_normalise(net, x)).reshape(n, -1, bands * 9)
    step = 0
    for epoch in range(config.epochs):
        # cosine decay of the step size over the run: big steps first, fine ones at the end
        lr = config.learning_rate * 0.5 * (1.0 + np.cos(np.pi * epoch / config.epochs))
        order = rng.permutation(n)
        loss_sum = correct = 0.0
        for start in range(0, n, config.batch_tiles):
            idx = order[start : start + config.batch_tiles]
            out, cache = _forward(net, x[idx], cols_all[idx].reshape(-1, bands * 9))
            loss, grads = _backward(net, cache, y[idx], mask[idx], config)
            loss_sum += loss * len(idx)
            correct += float((out["probabilities"].argmax(axis=1) == y[idx]).sum())
            step += 1
            for k, p in net.params().items():
                g = grads[k] + config.weight_decay * p if k.startswith("w") else grads[k]
                adam_m[k] = beta1 * adam_m[k] + (1 - beta1) * g
                adam_v[k] = beta2 * adam_v[k] + (1 - beta2) * g * g
                m_hat = adam_m[k] / (1 - beta1**step)
                v_hat = adam_v[k] / (1 - beta2**step)
                p -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)  # in place: p is the net's array
        net.history.append({"epoch": epoch, "loss": loss_sum / n, "train_accuracy": correct / n})
    return net


def _im2col(xn: np.ndarray) -> np.ndarray:
    """[B,C,H,W] -> [B*H*W, C*9], zero padding 1; column order matches Conv weight [out, C, 3, 3]."""
    b, c, h, w = xn.shape
    padded = np.pad(xn, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # [B,C,H,W,3,3]
    return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(b * h * w, c * 9)


def _normalise(net: CloudNet, x: np.ndarray) -> np.ndarray:
    return (x - net.band_mean[None, :, None, None]) / net.band_std[None, :, None, None]


def _forward(
    net: CloudNet, tiles: np.ndarray, cols: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    x = np.asarray(tiles, dtype=np.float32)
    b, c, h, w = x.shape
    if cols is None:
        cols = _im2col(_normalise(net, x))  # [P, C*9], P = B*H*W
    a1 = cols @ net.w1.reshape(len(net.b1), -1).T + net.b1
    h1 = np.maximum(a1, 0.0)
    a2 = h1 @ net.w2.reshape(len(net.b2), -1).T + net.b2
    h2 = np.maximum(a2, 0.0)
    s = h2 @ net.w3.reshape(1, -1).T + net.b3  # [P, 1] pixel logits
    p = 1.0 / (1.0 + np.exp(-s))
    fraction = p.reshape(b, h * w).mean(axis=1, keepdims=True)
    h_mean = h2.reshape(b, h * w, -1).mean(axis=1)
    z = np.concatenate([fraction, h_mean], axis=1)
    logits = z @ net.wh.T + net.bh
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    out = {"logits": logits, "probabilities": probs, "cloud_fraction": fraction, "pixel_p": p.reshape(b, h, w)}
    cache = {"cols": cols, "a1": a1, "h1": h1, "a2": a2, "h2": h2, "s": s, "p": p, "z": z, "probs": probs}
    return out, cache


def _backward(net: CloudNet, cache: dict[str, np.ndarray], y: np.ndarray, mask: np.ndarray, config: TrainConfig):
    probs, z, p, h2 = cache["probs"], cache["z"], cache["p"], cache["h2"]
    b = len(y)
    hw = len(p) // b
    onehot = np.eye(2, dtype=np.float32)[y]
    tile_loss = -np.mean(np.log(np.clip(probs[np.arange(b), y], 1e-12, None)))
    target = mask.reshape(-1, 1)
    s = cache["s"]
    # BCE with logits, stable form: max(s,0) - s*t + log(1 + exp(-|s|))
    pixel_loss = np.mean(np.maximum(s, 0) - s * target + np.log1p(np.exp(-np.abs(s))))
    loss = float(tile_loss + config.pixel_loss_weight * pixel_loss)

    d_logits = (probs - onehot) / b
    g = {"wh": d_logits.T @ z, "bh": d_logits.sum(axis=0)}
    dz = d_logits @ net.wh
    d_fraction, d_hmean = dz[:, :1], dz[:, 1:]
    ds = np.repeat(d_fraction / hw, hw, axis=0) * p * (1.0 - p)
    ds += config.pixel_loss_weight * (p - target) / len(p)
    g["w3"] = (ds.T @ h2).reshape(net.w3.shape)
    g["b3"] = ds.sum(axis=0)
    dh2 = ds @ net.w3.reshape(1, -1) + np.repeat(d_hmean / hw, hw, axis=0)
    da2 = dh2 * (cache["a2"] > 0)
    g["w2"] = (da2.T @ cache["h1"]).reshape(net.w2.shape)
    g["b2"] = da2.sum(axis=0)
    dh1 = da2 @ net.w2.reshape(len(net.b2), -1)
    da1 = dh1 * (cache["a1"] > 0)
    g["w1"] = (da1.T @ cache["cols"]).reshape(net.w1.shape)
    g["b1"] = da1.sum(axis=0)
    return loss, {k: v.astype(np.float32) for k, v in g.items()}
