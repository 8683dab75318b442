"""Write tests/data/torch-cnn.onnx and torch-cnn.npz: a small CNN built in
PyTorch and exported by torch.onnx.export, with inputs and PyTorch's outputs,
so that tests/test_onnx.py checks that pyconv reads a peer's file and predicts
what PyTorch predicts (without torch installed).

    pip install torch onnx onnxscript && python tests/data/make_torch_onnx.py

The network uses what PyTorch writes differently from pyconv: NCHW input,
symmetric padding, a strided convolution, a padded max-pool, a Flatten of
NCHW (rows in (c, h, w) order), Linear as Gemm with transB, and a bias-free
convolution. Its weights are random (seed 0): the file tests reading, not
accuracy, and stays small.
"""
import hashlib
import os

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def network():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2, stride=2, padding=1),                  # 28 -> 15
        nn.Conv2d(8, 12, 3, stride=2, bias=False), nn.Tanh(),  # 15 -> 7
        nn.Flatten(),
        nn.Linear(12 * 7 * 7, 32), nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(32, 10),
    ).eval()


def main():
    net = network()
    x = torch.from_numpy(np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32))
    onnx_path = os.path.join(HERE, "torch-cnn.onnx")
    torch.onnx.export(net, (x,), onnx_path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17,
                      dynamo=False)
    with torch.no_grad():
        y = net(x).numpy()
    np.savez(os.path.join(HERE, "torch-cnn.npz"), x_nchw=x.numpy(), y=y)
    for name in ("torch-cnn.onnx", "torch-cnn.npz"):
        with open(os.path.join(HERE, name), "rb") as f:
            print(hashlib.sha256(f.read()).hexdigest(), name)


if __name__ == "__main__":
    main()
