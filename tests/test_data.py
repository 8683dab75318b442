"""The IDX reader on files the test writes, and the download path against a
local HTTP server on 127.0.0.1 (tests never touch the internet)."""
import gzip
import http.server
import os
import shutil
import struct
import threading

import numpy as np
import pytest

from pyconv import data, datasets
from pyconv.errors import DataError

from conftest import FULL_MNIST, MNIST_DIR, MNIST_SAMPLE_DIR, needs_full_mnist


def write_idx(path, array, magic=None, gz=True, dims=None):
    ndim = array.ndim
    header = struct.pack(">I", magic if magic is not None else data.idx.MAGIC[ndim])
    header += struct.pack(f">{ndim}I", *(dims or array.shape))
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        payload = gzip.compress(payload)
    with open(path, "wb") as f:
        f.write(payload)
    return path


def fake_mnist(folder, n_train=60000, n_test=10000, gz=True):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if gz else ""
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"),
                  rng.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"),
                  rng.integers(0, 10, n), gz=gz)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    a = np.random.default_rng(1).integers(0, 256, (5, 28, 28))
    path = write_idx(tmp_path / "x.idx", a, gz=gz)
    np.testing.assert_array_equal(data.read_idx(path, 3), a)


def test_read_mnist_dir_of_written_files(tmp_path):
    (xtr, ytr), (xte, yte) = data.read_mnist_dir(fake_mnist(str(tmp_path), gz=False))
    assert xtr.shape == (60000, 28, 28) and ytr.shape == (60000,) and xte.shape[0] == 10000
    assert xtr.dtype == np.uint8 and yte.max() <= 9


def test_wrong_magic(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((2, 28, 28)), magic=0x00000801)
    with pytest.raises(DataError, match=r"x\.gz.*magic"):
        data.read_idx(path, 3)


def test_truncated(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4, 28, 28)), gz=False)
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-10])
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(path, 3)


def test_gzip_crc_error(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.arange(4 * 28 * 28).reshape(4, 28, 28) % 251)
    raw = bytearray(open(path, "rb").read())
    raw[-8] ^= 0xFF        # the CRC-32 in the gzip trailer
    open(path, "wb").write(bytes(raw))
    with pytest.raises(DataError, match=r"x\.gz.*gzip"):
        data.read_idx(path, 3)


def test_counts_that_disagree(tmp_path):
    folder = fake_mnist(str(tmp_path / "d"), gz=False)
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte"), np.zeros(9999), gz=False)
    with pytest.raises(DataError, match="10000 images but .*9999 labels"):
        data.read_mnist_dir(folder)


def test_missing_file(tmp_path):
    folder = fake_mnist(str(tmp_path / "d"), gz=False)
    os.unlink(os.path.join(folder, "train-labels-idx1-ubyte"))
    with pytest.raises(DataError, match="missing IDX file.*train-labels"):
        data.read_mnist_dir(folder)


@needs_full_mnist
def test_real_mnist_loads_with_checksums():
    (xtr, ytr), (xte, yte) = data.load_mnist(MNIST_DIR)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.bincount(yte).tolist()[:3] == [980, 1135, 1032]
    for name in datasets.MNIST_FILES:
        assert datasets.checksum_ok(datasets.REGISTRY["mnist"], name, os.path.join(MNIST_DIR, name))


def test_committed_sample_is_real_mnist():
    """tests/data/mnist-sample: its files match SHA256SUMS; with the full files at
    hand, they are MNIST's first 4,000 training and 1,000 test images."""
    import hashlib
    with open(os.path.join(MNIST_SAMPLE_DIR, "SHA256SUMS")) as f:
        sums = dict(reversed(line.split()) for line in f if not line.startswith("#"))
    assert sorted(sums) == sorted(datasets.MNIST_FILES)
    for name, digest in sums.items():
        payload = gzip.decompress(open(os.path.join(MNIST_SAMPLE_DIR, name), "rb").read())
        assert hashlib.sha256(payload).hexdigest() == digest, name
    (xtr, ytr), (xte, yte) = data.load_mnist(MNIST_SAMPLE_DIR)
    assert xtr.shape == (4000, 28, 28) and xte.shape == (1000, 28, 28)
    if FULL_MNIST:
        (ftr, fytr), (fte, fyte) = data.load_mnist(MNIST_DIR)
        assert (ftr[:4000] == xtr).all() and (fytr[:4000] == ytr).all()
        assert (fte[:1000] == xte).all() and (fyte[:1000] == yte).all()


# ----------------------------------------------------------------- download

@pytest.fixture
def server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            if not self.path.startswith("/cut/"):
                return super().do_GET()
            # an interrupted transfer: promise the whole file, send a tenth, hang up
            body = (root / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 10])
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PYCONV_DATA_DIR", raising=False)
    monkeypatch.delenv("PYCONV_MNIST_MIRRORS", raising=False)
    monkeypatch.delenv("PYCONV_MIRRORS", raising=False)
    return tmp_path / "cache" / "pyconv" / "mnist"


def _mirrors(monkeypatch, *urls):
    monkeypatch.setenv("PYCONV_MIRRORS", ",".join(urls))


@needs_full_mnist
def test_download_into_cache(server, isolated_cache, monkeypatch):
    root, url = server
    for name in datasets.MNIST_FILES:
        shutil.copy(os.path.join(MNIST_DIR, name), root / name)
    _mirrors(monkeypatch, url)
    (xtr, _), (xte, _) = data.load_mnist(progress=False)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert sorted(os.listdir(isolated_cache)) == sorted(datasets.MNIST_FILES)


def test_checksum_mismatch_is_rejected_and_nothing_is_cached(server, isolated_cache,
                                                             monkeypatch):
    root, url = server
    fake_mnist(str(root))            # valid IDX files, but not MNIST's bytes
    _mirrors(monkeypatch, url)
    with pytest.raises(DataError, match="checksum mismatch"):
        data.load_mnist(progress=False)
    assert not isolated_cache.exists() or os.listdir(isolated_cache) == []


def test_interrupted_download_leaves_nothing_in_the_cache(server, isolated_cache,
                                                          monkeypatch):
    root, url = server
    for name in datasets.MNIST_FILES:
        shutil.copy(os.path.join(MNIST_DIR, name), root / name)
    _mirrors(monkeypatch, url + "cut/")
    with pytest.raises(DataError, match="could not download train-images"):
        data.load_mnist(progress=False)
    assert not isolated_cache.exists() or os.listdir(isolated_cache) == []


@needs_full_mnist
def test_second_mirror_used_when_first_fails(server, isolated_cache, monkeypatch):
    root, url = server
    for name in datasets.MNIST_FILES:
        shutil.copy(os.path.join(MNIST_DIR, name), root / name)
    _mirrors(monkeypatch, "http://127.0.0.1:9/", url)
    data.load_mnist(progress=False)
    assert len(os.listdir(isolated_cache)) == 4


def test_offline_error_says_where_it_looked(isolated_cache, monkeypatch):
    _mirrors(monkeypatch, "http://127.0.0.1:9/")
    with pytest.raises(DataError) as info:
        data.load_mnist(progress=False)
    message = str(info.value)
    assert str(isolated_cache) in message and "PYCONV_DATA_DIR" in message
    assert "--data-dir" in message
