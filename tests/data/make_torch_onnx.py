"""Write tests/data/torch-cnn.onnx and torch-cnn.npz: a small CNN built in
PyTorch and exported by torch.onnx.export, with inputs and PyTorch's outputs,
so that tests/test_onnx.py checks that pyconv reads a peer's file and predicts
what PyTorch predicts (without torch installed); and torch-resnet.onnx and
torch-resnet.npz, a network with residual connections (out = relu(x + f(x)))
and a branch concatenated along the channels; torch-bn-resnet.onnx and .npz,
torchvision-style residual blocks with batch normalisation (statistics from
training batches), an average pool, LeakyReLU, global average pooling, a
BatchNorm1d and a sigmoid.

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


class Residual(nn.Module):
    """relu(x + conv(relu(conv(x)))): torchvision's BasicBlock without BatchNorm."""

    def __init__(self, c):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class SkipNet(nn.Module):
    """A stem, two residual blocks, a branch of a 1x1 and a 3x3 convolution
    concatenated along the channels, a pool and a classifier."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.blocks = nn.Sequential(Residual(6), Residual(6))
        self.left, self.right = nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        h = self.blocks(torch.relu(self.stem(x)))
        h = torch.cat([torch.relu(self.left(h)), torch.relu(self.right(h))], dim=1)
        return self.head(torch.flatten(self.pool(h), 1))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv-BN-ReLU, conv-BN, plus the input (a 1x1
    conv + BN where the shape changes), ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                  nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class BNResNet(nn.Module):
    """A residual network with batch normalisation (trained statistics), an
    average pool without padding counted, LeakyReLU, global average pooling,
    a BatchNorm1d on features and a sigmoid gate."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.LeakyReLU(0.1))
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Sequential(nn.Linear(16, 24), nn.BatchNorm1d(24), nn.Sigmoid())
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        h = self.pool(self.blocks(self.stem(x)))
        return self.head(self.hidden(torch.flatten(self.gap(h), 1)))


def export(net, x, name):
    torch.onnx.export(net.eval(), (x,), os.path.join(HERE, f"{name}.onnx"), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                      opset_version=17, dynamo=False, do_constant_folding=False)
    with torch.no_grad():
        y = net(x).numpy()
    np.savez(os.path.join(HERE, f"{name}.npz"), x_nchw=x.numpy(), y=y)
    for file in (f"{name}.onnx", f"{name}.npz"):
        with open(os.path.join(HERE, file), "rb") as f:
            print(hashlib.sha256(f.read()).hexdigest(), file)


def main():
    x = torch.from_numpy(np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32))
    export(network(), x, "torch-cnn")
    export(SkipNet(), x[:, :, 8:20, 8:20].contiguous(), "torch-resnet")
    net = BNResNet().train()
    with torch.no_grad():              # running statistics away from their initial 0 and 1
        for i in range(20):
            net(torch.from_numpy(np.random.default_rng(i).normal(0.3, 0.5, (32, 1, 14, 14))
                                 .astype(np.float32)))
    export(net, x[:, :, 7:21, 7:21].contiguous(), "torch-bn-resnet")


if __name__ == "__main__":
    main()
