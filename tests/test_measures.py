"""Weight measures against closed forms, numpy and the standard library's compressors."""

from __future__ import annotations

import bz2
import lzma
import math
import zlib

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.errors import InvalidSettingError, MeasureError
from complexity_zoo.measures.spectral import singular_value_entropy
from complexity_zoo.testing import check_measure


def matrix_with_singular_values(s, m, n, seed=0):
    """U diag(s) V^T with random orthonormal U (m x k) and V (n x k)."""
    g = torch.Generator().manual_seed(seed)
    k = len(s)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    return (u * torch.tensor(s, dtype=torch.float64)) @ v.T


class TwoMatrices(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a = nn.Parameter(a.float())
        self.b = nn.Parameter(b.float())
        self.bias = nn.Parameter(torch.ones(3))  # 1-D: not a matrix, ignored by spectral measures


def entropy(s):
    p = np.asarray(s, dtype=float) / np.sum(s)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize("name", list(cz.list_measures()["name"]))
def test_every_registered_measure_conforms(name):
    check_measure(name)


def test_effective_rank_of_equal_singular_values_is_the_rank():
    model = TwoMatrices(matrix_with_singular_values([2.0] * 3, 8, 6), matrix_with_singular_values([1.0] * 5, 5, 7))
    result = cz.get_measure("effective_rank")(model)
    assert result.extras["per_layer"]["a"] == pytest.approx(3.0, rel=1e-5)
    assert result.extras["per_layer"]["b"] == pytest.approx(5.0, rel=1e-5)
    assert result.value == pytest.approx(4.0, rel=1e-5)


def test_spectral_measures_match_hand_computation():
    sa, sb = [5.0, 2.0, 1.0, 0.5], [3.0, 3.0, 0.1]
    model = TwoMatrices(matrix_with_singular_values(sa, 9, 4, seed=1), matrix_with_singular_values(sb, 3, 6, seed=2))
    ent = cz.get_measure("spectral_entropy")(model)
    assert ent.value == pytest.approx((entropy(sa) + entropy(sb)) / 2, rel=1e-5)
    er = cz.get_measure("effective_rank")(model)
    assert er.value == pytest.approx((math.exp(entropy(sa)) + math.exp(entropy(sb))) / 2, rel=1e-5)
    sr = cz.get_measure("stable_rank")(model)
    expected = (sum(x * x for x in sa) / 25.0 + sum(x * x for x in sb) / 9.0) / 2
    assert sr.value == pytest.approx(expected, rel=1e-5)


def test_spectral_measures_agree_with_numpy_svd_on_a_conv_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    mats = [p.detach().numpy().reshape(p.shape[0], -1) for p in model.parameters() if p.ndim >= 2]
    svals = [np.linalg.svd(m.astype(np.float64), compute_uv=False) for m in mats]
    assert cz.get_measure("spectral_entropy")(model).value == pytest.approx(
        np.mean([entropy(s) for s in svals]), rel=1e-6)
    assert cz.get_measure("stable_rank")(model).value == pytest.approx(
        np.mean([(s**2).sum() / s.max() ** 2 for s in svals]), rel=1e-6)


def test_zero_matrices_are_skipped_and_all_zero_is_an_error():
    model = TwoMatrices(matrix_with_singular_values([1.0, 1.0], 4, 4), torch.zeros(3, 3))
    result = cz.get_measure("effective_rank")(model)
    assert result.value == pytest.approx(2.0, rel=1e-5)
    assert result.extras["skipped_zero_matrices"] == ["b"]
    with pytest.raises(MeasureError, match="no non-zero parameter"):
        cz.get_measure("stable_rank")(TwoMatrices(torch.zeros(2, 2), torch.zeros(2, 2)))


def test_singular_value_entropy_limits():
    assert float(singular_value_entropy(torch.tensor([1.0, 0.0, 0.0]))) == 0.0
    assert float(singular_value_entropy(torch.ones(4))) == pytest.approx(math.log(4))


def test_l2_matches_torch_vector_norm(model_and_data):
    model, _ = model_and_data
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    result = cz.get_measure("l2")(model)
    assert result.value == pytest.approx(float(torch.linalg.vector_norm(flat)), rel=1e-6)
    assert set(result.extras["per_layer"]) == {n for n, _ in model.named_parameters()}


def test_param_count(model_and_data):
    model, _ = model_and_data
    assert cz.get_measure("param_count")(model).value == 4 * 16 + 16 + 16 * 3 + 3


@pytest.mark.parametrize(
    "compressor, compress",
    [("bz2", lambda b: bz2.compress(b, 9)), ("lzma", lambda b: lzma.compress(b, preset=9)),
     ("zlib", lambda b: zlib.compress(b, 9))],
)
def test_naive_compression_matches_the_compressor(model_and_data, compressor, compress):
    model, _ = model_and_data
    expected = sum(8 * len(compress(p.detach().numpy().astype("<f4").tobytes())) for p in model.parameters())
    assert cz.get_measure("naive_compression", compressor=compressor)(model).value == expected


def test_naive_compression_rejects_unknown_compressor():
    with pytest.raises(InvalidSettingError, match="compressor.*bz2"):
        cz.get_measure("naive_compression", compressor="gzip")


@pytest.mark.parametrize("compressor", ["bz2", "lzma", "zlib"])
def test_streamed_compression_writes_the_one_shot_bytes(compressor):
    """naive_compression feeds tensors to the compressor in pieces; the size must be that of
    the standard one-shot call on the whole float32 payload (several pieces' worth here)."""
    import bz2
    import lzma
    import zlib

    from complexity_zoo.measures import compression

    t = torch.randn(3 * compression.PIECE // 4 + 123)  # 3+ pieces of bytes
    t[::7] = 0.0  # some redundancy, so the compressors have something to find
    payload = t.numpy().astype("<f4").tobytes()
    one_shot = {"bz2": lambda b: bz2.compress(b, compresslevel=9), "lzma": lambda b: lzma.compress(b, preset=9),
                "zlib": lambda b: zlib.compress(b, level=9)}[compressor]
    assert compression.compressed_bytes(compression.float32_bytes(t), compressor) == len(one_shot(payload))


def test_the_memory_light_finiteness_check_agrees_with_isfinite():
    """Measures refuse diverged weights through a min/max reduction; it must say what isfinite says."""
    from complexity_zoo.measure import _all_finite

    nan, inf = float("nan"), float("inf")
    cases = [torch.randn(1000), torch.tensor([1.0, nan, 2.0]), torch.full((3,), nan), torch.tensor([1.0, inf]),
             torch.tensor([-inf, 0.0]), torch.zeros(0), torch.randn(5, 5).bfloat16(),
             torch.tensor([nan, 1.0], dtype=torch.float16), torch.randn(4, 3).double()]
    for t in cases:
        assert bool(_all_finite(t)) == bool(torch.isfinite(t).all()), t
