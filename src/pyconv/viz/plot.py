"""Pictures of what a network learned and how its training went, each a
matplotlib Figure built without pyplot (no display, no global state):
fig.savefig("kernels.png") writes one, a notebook shows one as it is.

    kernels(model, layer=None)        a convolution's kernels, one colour scale
    feature_maps(model, image)        each convolution's and pool's output channels
    curves(history)                   loss, accuracies and learning rate against step
    confusion(model, x, y)            the confusion matrix, with per-class accuracy
    mistakes(model, x, y, n=16)       the most confidently wrong images

The arrays behind the pictures are functions too (kernel_mosaic,
confusion_matrix, worst_mistakes), for tests and for the report page.
Needs the plot extra: pip install 'pyconv[plot]'.
"""
import json
import math

import numpy as np

from ..extras import require
from ..layers import Conv2D

KERNEL_LAYERS = (Conv2D,)     # the layers whose weights are kernels to draw (by class)
CMAP, DPI = "RdBu_r", 100     # weights: red positive, blue negative, white 0


def _figure(width, height):
    require("plot", "pyconv.plot")
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _cmap(name):
    import matplotlib
    return matplotlib.colormaps[name].with_extremes(bad="#d0d0d0")   # the gaps between cells


def mosaic(cells, cols, gap=1):
    """cells (n, h, w) as one array of rows x cols cells (row-major), NaN
    between them and in unused cells."""
    n, h, w = cells.shape
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = cells[k]
    return out


def conv_layers(model):
    """The indices of the model's convolution layers."""
    return [i for i, layer in enumerate(model.layers) if type(layer) in KERNEL_LAYERS]


def _conv_index(model, layer):
    convs = conv_layers(model)
    if not convs:
        raise ValueError("the model has no convolution layer")
    layer = convs[0] if layer is None else layer
    if layer not in convs:
        raise ValueError(f"layer must be the index of a convolution layer, one of {convs}, "
                         f"got {layer!r}")
    return layer


def kernel_mosaic(model, layer=None):
    """(mosaic, cols, layer index) for a convolution's weights (kh, kw, C, F):
    with one input channel, its F kernels in a near-square grid; with C, a
    row per input channel and a column per kernel."""
    layer = _conv_index(model, layer)
    w = model.layers[layer].params["w"].value.astype(np.float64)
    kh, kw, c, f = w.shape
    cells = w.transpose(2, 3, 0, 1).reshape(c * f, kh, kw)      # (c, f) row-major
    cols = math.ceil(math.sqrt(f)) if c == 1 else f
    return mosaic(cells, cols), cols, layer


def kernels(model, layer=None):
    """The kernels of convolution `layer` (an index into model.layers; the
    first convolution by default) on one colour scale, symmetric about 0."""
    grid, cols, layer = kernel_mosaic(model, layer)
    w = model.layers[layer].params["w"].value
    kh, kw, c, f = w.shape
    scale = float(np.abs(w).max()) or 1.0
    px = min(20.0, max(3.0, 1100 / max(grid.shape)))          # screen pixels per weight
    fig = _figure(grid.shape[1] * px / DPI + 1.6, grid.shape[0] * px / DPI + 0.8)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap=_cmap(CMAP), vmin=-scale, vmax=scale,
                      interpolation="nearest")
    ax.set_title(f"layer {layer} (Conv2D): {f} kernels of {kh}x{kw}", fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
    if c > 1:       # a row per input channel, a column per kernel: number them
        every = max(1, f // 8)
        ax.set_xticks([(kw + 1) * k + kw / 2 - 0.5 for k in range(0, f, every)],
                      range(0, f, every), fontsize=8)
        ax.set_yticks([(kh + 1) * k + kh / 2 - 0.5 for k in range(0, c, max(1, c // 8))],
                      range(0, c, max(1, c // 8)), fontsize=8)
        ax.set_xlabel("kernel (output channel)"), ax.set_ylabel("input channel")
    fig.colorbar(image, ax=ax, shrink=0.8, label="weight")
    return fig


def one_image(model, image, fn="feature_maps"):
    """One image ((H, W[, C]), or the first of a batch) as the first layer
    takes it: (1, H, W, C) float32."""
    image = np.asarray(image)
    return model.prepare(image[None] if image.ndim < 4 else image[:1], fn)


def activations(model, image):
    """[(index, layer, output (H, W, C))] for each convolution and pool, one image."""
    outputs = model.node_outputs(one_image(model, image))
    return [(i, node.layer, y[0]) for i, (node, y) in enumerate(outputs) if y.ndim == 4]



def feature_maps(model, image):
    """One image through the network: the input, then each convolution's and
    pool's output channels as a grid (one colour scale per layer, with a bar)."""
    x = one_image(model, image)
    maps = activations(model, x)         # (x is float32 already: prepared once)
    x = x[0]
    fig = _figure(10, 2.2 * (len(maps) + 1))
    axes = fig.subplots(len(maps) + 1, 1, squeeze=False)[:, 0]
    axes[0].imshow(x if x.shape[2] == 3 else x[..., 0], cmap="gray", interpolation="nearest")
    axes[0].set_title("input")
    for ax, (i, layer, y) in zip(axes[1:], maps):
        cells = y.transpose(2, 0, 1)
        im = ax.imshow(mosaic(cells, min(len(cells), 16)), cmap=_cmap("viridis"),
                       interpolation="nearest")
        ax.set_title(f"layer {i} ({type(layer).__name__}): {y.shape[2]} channels of "
                     f"{y.shape[0]}x{y.shape[1]}")
        fig.colorbar(im, ax=ax, shrink=0.9)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    return fig


def history_of(history):
    """The list of evaluation entries in a History, a metrics dict or file, or a list."""
    if isinstance(history, str):
        history = read_metrics(history)
    history = getattr(history, "history", history)
    if isinstance(history, dict):
        history = history.get("history", [])
    return list(history)


def read_metrics(path):
    """A --metrics file's contents, or ValueError naming the file."""
    with open(path) as f:
        try:
            metrics = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a metrics file written by pyconv train --metrics "
                             f"({e})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("history"), list):
        raise ValueError(f"{path}: not a metrics file written by pyconv train --metrics (no "
                         "history)")
    return metrics


CURVES = {"loss": ("train_loss", "validation_loss", "test_loss"),
          "accuracy": ("train_accuracy", "validation_accuracy", "test_accuracy")}


def curve_data(history):
    """{key: (steps, values)} for every figure the history records."""
    out = {}
    for entry in history_of(history):
        for key, value in entry.items():
            if key != "step" and isinstance(value, (int, float)):
                steps, values = out.setdefault(key, ([], []))
                steps.append(entry["step"]), values.append(value)
    return out


def curves(history):
    """Loss and accuracy (training, validation; test as a point) and the
    learning rate against step."""
    data = curve_data(history)
    if "train_loss" not in data and "loss" in data:     # an older file: batch losses only
        data["train_loss"] = data["loss"]
    fig = _figure(10, 7)
    axes = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 1.2])
    for ax, (name, keys) in zip(axes, CURVES.items()):
        for key in keys:
            if key in data:
                style = dict(marker="*", markersize=12, ls="") if key.startswith("test") else {}
                ax.plot(*data[key], label=key.split("_")[0], **style)
        ax.set_ylabel(name), ax.grid(alpha=0.3), ax.legend(loc="best")
    if "lr" in data:
        axes[2].plot(*data["lr"], color="gray")
    axes[2].set_ylabel("learning rate"), axes[2].set_xlabel("step"), axes[2].grid(alpha=0.3)
    return fig


def confusion_matrix(y_true, y_pred, classes):
    """counts[true, predicted] (classes x classes)."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(
        classes, classes)


def _names(model):
    return model.class_names or [str(i) for i in range(model.output_shape[0])]


def confusion(model, x, y):
    """The confusion matrix on (x, y): rows the true class, columns the
    predicted one, counts written in; each row labelled with its accuracy."""
    names = _names(model)
    counts = confusion_matrix(y, model.predict(x).argmax(axis=1), len(names))
    per_class = np.diag(counts) / np.maximum(counts.sum(axis=1), 1)
    size = 2 + 0.5 * len(names)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    im = ax.imshow(counts, cmap="Blues", norm="log" if counts.max() > 100 else None)
    if len(names) <= 20:
        for (t, p), n in np.ndenumerate(counts):
            ax.text(p, t, str(n), ha="center", va="center", fontsize=8,
                    color="white" if n > counts.max() / 3 else "black")
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 10 else 0)
    ax.set_yticks(range(len(names)), [f"{n} ({a:.1%})" for n, a in zip(names, per_class)])
    ax.set_xlabel("predicted"), ax.set_ylabel("true class (its accuracy)")
    right, total = int(np.trace(counts)), int(counts.sum())
    ax.set_title(f"{right} of {total} right ({right / max(total, 1):.2%})")
    fig.colorbar(im, ax=ax, shrink=0.8, label="images")
    return fig


def worst_mistakes(model, x, y, n=16):
    """Indices of the n wrong predictions with the highest probability, their
    predicted classes and probabilities."""
    classes, probs = model.predict_classes(x)
    wrong = np.flatnonzero(classes != np.asarray(y))
    order = wrong[np.argsort(-probs[wrong], kind="stable")][:n]
    return order, classes[order], probs[order]


def mistakes(model, x, y, n=16):
    """The test images the network gets most confidently wrong: each with its
    true class, the predicted one and its probability."""
    idx, pred, prob = worst_mistakes(model, x, y, n)
    names, cols = _names(model), 8
    rows = max(1, math.ceil(len(idx) / cols))
    fig = _figure(12, 1.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i, p, pr in zip(axes, idx, pred, prob):
        img = np.asarray(x[i])
        if img.ndim == 1:
            img = img[None]                            # features: one row
        elif img.ndim == 3 and img.shape[2] != 3:
            img = img[..., 0]
        ax.imshow(img, cmap="gray")
        ax.set_title(f"{names[int(y[i])]} -> {names[p]}\n({pr:.2f})", fontsize=8)
    if not len(idx):
        axes[0].set_title("no mistakes")
    return fig
