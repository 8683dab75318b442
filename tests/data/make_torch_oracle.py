"""Writes tests/data/torch-oracle.npz: what PyTorch computes for the
operations of modern small CNNs, from fixed inputs, for tests/test_torch_oracle.py
(the suite itself never imports torch).

    python tests/data/make_torch_oracle.py      # torch 2.13 (CPU)

Images are stored NHWC (pyconv's layout); PyTorch ran them NCHW.
"""
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def nchw(a):
    return torch.tensor(a.transpose(0, 3, 1, 2).copy(), dtype=torch.float64, requires_grad=True)


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)


def batchnorm(rng, out):
    x = (rng.standard_normal((4, 5, 6, 3)) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = (rng.standard_normal(3).astype(np.float32) for _ in range(2))
    bn = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5).double()
    with torch.no_grad():
        bn.weight[:] = torch.tensor(gamma)
        bn.bias[:] = torch.tensor(beta)
    xt = nchw(x)
    y = bn(xt)
    y.backward(nchw(dy))
    out.update(bn_x=x, bn_dy=dy, bn_gamma=gamma, bn_beta=beta, bn_y=nhwc(y),
               bn_dx=nhwc(xt.grad), bn_dgamma=bn.weight.grad.numpy().astype(np.float32),
               bn_dbeta=bn.bias.grad.numpy().astype(np.float32),
               bn_running_mean=bn.running_mean.numpy().astype(np.float32),
               bn_running_var=bn.running_var.numpy().astype(np.float32))
    bn.eval()
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    out.update(bn_x_eval=x2, bn_y_eval=nhwc(bn(nchw(x2))))


def pools(rng, out):
    x = rng.standard_normal((2, 7, 9, 4)).astype(np.float32)
    pool = torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    xt = nchw(x)
    y = pool(xt)
    dy = rng.standard_normal(nhwc(y).shape).astype(np.float32)
    y.backward(nchw(dy))
    out.update(avg_x=x, avg_y=nhwc(y), avg_dy=dy, avg_dx=nhwc(xt.grad))
    xt = nchw(x)
    g = torch.nn.AdaptiveAvgPool2d(1)(xt).flatten(1)
    dg = rng.standard_normal((2, 4)).astype(np.float32)
    g.backward(torch.tensor(dg, dtype=torch.float64))
    out.update(gap_y=g.detach().numpy().astype(np.float32), gap_dy=dg,
               gap_dx=nhwc(xt.grad))


def loss(rng, out):
    logits = rng.standard_normal((6, 10)).astype(np.float32) * 3
    labels = rng.integers(0, 10, 6)
    t = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    value = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(t, torch.tensor(labels))
    value.backward()
    out.update(ls_logits=logits, ls_labels=labels, ls_loss=np.float32(value.item()),
               ls_grad=t.grad.numpy().astype(np.float32))


def optimisers(rng, out):
    p0 = rng.standard_normal(50).astype(np.float32)
    grads = rng.standard_normal((3, 50)).astype(np.float32)
    for name, make in (("adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.05)),
                       ("nesterov", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9,
                                                                nesterov=True,
                                                                weight_decay=5e-4))):
        p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
        opt = make([p])
        for g in grads:
            p.grad = torch.tensor(g, dtype=torch.float64)
            opt.step()
        out[f"{name}_p"] = p.detach().numpy().astype(np.float32)
    out.update(opt_p0=p0, opt_grads=grads)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=50)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out["onecycle_lrs"] = np.array(lrs)


def main():
    rng = np.random.default_rng(2026)
    out = {}
    for make in (batchnorm, pools, loss, optimisers):
        make(rng, out)
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(os.path.join(HERE, "torch-oracle.npz"), **out)
    print(f"wrote {len(out)} arrays to torch-oracle.npz (torch {torch.__version__})")


if __name__ == "__main__":
    main()
