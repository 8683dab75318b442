"""Softmax cross-entropy: the mean loss over the batch and its gradient."""
import numpy as np


def softmax_cross_entropy(logits, labels, batch=None, label_smoothing=0.0):
    """(mean loss, dlogits) for logits (N, K) and integer labels (N,). batch:
    the number of examples the mean is over (default N); N examples of a
    larger batch (one process's slice) give their share of its mean.
    label_smoothing = e: the target is 1 - e on the label plus e / K on every
    class (PyTorch's CrossEntropyLoss(label_smoothing=e))."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, K), got {logits.shape}")
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"softmax_cross_entropy: labels must be integers of shape "
                         f"({logits.shape[0]},), got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"softmax_cross_entropy: labels must be in [0, {logits.shape[1]}), "
                         f"got values in [{labels.min()}, {labels.max()}]")
    e = label_smoothing
    if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < 1:
        raise ValueError(f"softmax_cross_entropy: label_smoothing must be a number in [0, 1), "
                         f"got {e!r}")
    n, k = logits.shape
    z = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z).sum(axis=1))
    rows = np.arange(n)
    batch = n if batch is None else batch
    picked = z[rows, labels] if not e else (1 - e) * z[rows, labels] + e * z.mean(axis=1)
    loss = float(np.sum(log_sum - picked) / batch) if n else 0.0
    grad = np.exp(z - log_sum[:, None])
    if e:
        grad -= e / k
    grad[rows, labels] -= 1 - e
    grad /= max(batch, 1)
    return loss, grad.astype(np.float32)
