"""The public PyTorch recipe that reaches 99% on MNIST in one epoch, the
baseline of `pyconv train --model fast` (benchmarks/bench_fast_mnist.py runs
both in one sitting).

    python benchmarks/fast_mnist_torch.py --data-dir ../shared/data/mnist --seed 0

conv 5x5 24 channels, max-pool 2, ReLU; conv 5x5 32, max-pool 2, ReLU; dense
256, ReLU; dense 10 (channels_last); inputs normalised by MNIST's mean and
standard deviation; Adam lr 0.01, betas (0.7, 0.9), OneCycleLR (max 0.01)
over 2 epochs of batch 128, shuffled; the training set (all 60,000) as one
float tensor in memory; torch.set_num_threads(2). Timed from the first step
to the test accuracy. Prints one JSON line.
"""
import argparse
import json
import time

import torch
from torch import nn

from pyconv.data.idx import read_mnist_dir  # (the same files, read the same way)


def load(data_dir):
    (xtr, ytr), (xte, yte) = read_mnist_dir(data_dir)
    return xtr, ytr, xte, yte


def network():
    return nn.Sequential(
        nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(24, 32, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr, ytr, xte, yte = load(args.data_dir)
    mean, std = 0.1307, 0.3081

    def tensor(x):
        t = torch.tensor(x, dtype=torch.float32).div_(255).sub_(mean).div_(std)
        return t.unsqueeze(1).contiguous(memory_format=torch.channels_last)

    xtr, xte = tensor(xtr), tensor(xte)
    ytr, yte = torch.tensor(ytr, dtype=torch.long), torch.tensor(yte, dtype=torch.long)
    model = network().to(memory_format=torch.channels_last)
    batch = 128
    steps_per_epoch = -(-len(xtr) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.7, 0.9))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01,
                                                total_steps=args.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(xtr))
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum())
                      for i in range(0, len(xte), 1000))
    seconds = time.perf_counter() - start
    print(json.dumps({"framework": f"PyTorch {torch.__version__}", "seed": args.seed,
                      "test_accuracy": correct / len(xte), "seconds": seconds,
                      "epochs": args.epochs, "threads": args.threads}))


if __name__ == "__main__":
    main()
