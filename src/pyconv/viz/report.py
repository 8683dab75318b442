"""`pyconv report`: one HTML page of what a trained network learned and how
its training went, with the PNGs it shows beside it (no network needed to
view it): training curves, every convolution's kernels, one test image's
feature maps, the confusion matrix, the most confidently wrong test images,
and an explorer of the first convolution: click a pixel of a feature map to
see the input window it came from, the kernel, and the products that sum to
the value (report.js, plain JavaScript, the numbers embedded in the page).
"""
import html
import json
import os
from importlib import resources

import numpy as np

from convcore.geometry import window_pads

from ..errors import WriteError
from ..io.files import write_file
from . import plot


def _save(fig, out, name):
    path = os.path.join(out, name)
    write_file(path, lambda f: fig.savefig(f, format="png", dpi=plot.DPI))
    return name


def _round(a):
    return np.round(np.asarray(a, np.float64), 7).tolist()


def explorer_data(model, image):
    """What the page's explorer needs, for the first convolution on one image:
    the scaled input, the weights, bias, window geometry and the layer's output."""

    i = plot.conv_layers(model)[0]
    x = plot.one_image(model, image, "report")
    outputs = model.node_outputs(x)
    values = {"input": x, **{n.name: out for n, out in outputs}}
    node, y = outputs[i][0], outputs[i][1][0]
    x, conv = values[node.inputs[0]], node.layer

    (pt, _), (pl, _) = window_pads(x.shape[1:3], conv.kernel_size, conv.stride, conv.padding)
    b = conv.params["b"].value if conv.use_bias else np.zeros(conv.filters, np.float32)
    return {"layer": i, "input": _round(x[0]), "weights": _round(conv.params["w"].value),
            "bias": _round(b), "stride": list(conv.stride), "pads": [pt, pl],
            "relu": conv.activation == "relu", "output": _round(y)}


def pictures(model, out, metrics=None, test=None, image_index=0):
    """Write the PNGs; returns [(title, file name, caption)]."""
    shown = []
    if metrics is not None:
        shown.append(("Training", _save(plot.curves(metrics), out, "curves.png"),
                      "loss and accuracy against step (training: the mean over the steps "
                      "since the last evaluation; test: once, at the end) and the "
                      "learning rate"))
    for i in plot.conv_layers(model):
        shown.append((f"Kernels of layer {i}", _save(plot.kernels(model, i), out,
                                                     f"kernels-{i}.png"),
                      "each cell one kernel's weights; one colour scale for the layer"))
    if test is not None:
        x, y = test
        shown.append(("Feature maps", _save(plot.feature_maps(model, x[image_index]), out,
                                            "feature-maps.png"),
                      f"test image {image_index} through the network"))
        shown.append(("Confusion matrix", _save(plot.confusion(model, x, y), out,
                                                "confusion.png"),
                      f"the {len(y)} test images: rows the true class, columns the "
                      "predicted one"))
        shown.append(("Most confident mistakes", _save(plot.mistakes(model, x, y), out,
                                                       "mistakes.png"),
                      "true class -> predicted class (its probability)"))
    return shown


def write(model, out, metrics=None, test=None, image_index=0):
    """The report in folder `out`: index.html and its PNGs. metrics: a run's
    metrics (dict or file); test: (x, y) test images. Returns index.html's path."""
    if isinstance(metrics, str):
        metrics = plot.read_metrics(metrics)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise WriteError(f"could not make the report's folder {out}: {e.strerror}") from None
    if test is not None and not 0 <= image_index < len(test[1]):
        raise ValueError(f"--image must be from 0 to {len(test[1]) - 1}, got {image_index}")
    shown = pictures(model, out, metrics, test, image_index)
    sections = "\n".join(
        f'<section><h2>{html.escape(title)}</h2><img src="{name}" alt="{html.escape(title)}">'
        f"<p>{html.escape(caption)}</p></section>" for title, name, caption in shown)
    explorer = ""
    if test is not None and plot.conv_layers(model):
        data = explorer_data(model, test[0][image_index])
        explorer = (_EXPLORER.replace("LAYER", str(data["layer"]))
                    + f"<script>const DATA = {json.dumps(data)};\n"
                    + resources.files("pyconv.viz").joinpath("report.js").read_text() + "</script>")
    summary = html.escape(model.summary())
    page = _PAGE.format(name=html.escape(model.name), summary=summary, sections=sections,
                        explorer=explorer, head=_head(metrics, test))
    path = os.path.join(out, "index.html")
    write_file(path, lambda f: f.write(page.encode()))
    return path


def _head(metrics, test):
    parts = []
    if metrics:
        precision = metrics.get("precision", "fp32")
        parts.append(f"{metrics.get('steps')} steps of batch {metrics.get('batch_size')}"
                     + ("" if precision == "fp32" else f" in {precision}")
                     + f", test accuracy {metrics.get('test_accuracy')}")
    if test is not None:
        parts.append(f"{len(test[1])} test images")
    return html.escape("; ".join(parts))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pyconv report: {name}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 1em auto; color: #222; }}
img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: .5em; }}
section {{ margin-bottom: 2em; }}
#explorer canvas {{ image-rendering: pixelated; border: 1px solid #999; cursor: crosshair; }}
table.grid {{ border-collapse: collapse; font-size: 11px; display: inline-table;
  margin-right: 1em; vertical-align: top; }}
table.grid td {{ border: 1px solid #ccc; padding: 2px 4px; text-align: right; }}
</style></head>
<body>
<h1>{name}</h1>
<p>{head}</p>
<pre>{summary}</pre>
{sections}
{explorer}
</body></html>
"""

_EXPLORER = """<section id="explorer"><h2>How one value is made (layer LAYER)</h2>
<p>A convolution is one small linear layer, its kernel, reused at every position.
Pick a kernel, then click a pixel of its feature map: the input window under the
kernel there, the kernel's weights, and their products, whose sum plus the bias is
the value.</p>
<p><label>kernel <select id="channel"></select></label></p>
<canvas id="input"></canvas> <canvas id="fmap"></canvas>
<div id="detail"></div>
<p id="value"></p>
</section>
"""
