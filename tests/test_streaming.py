"""Weight-only measures streamed from checkpoint files equal the same measures on the built model
(an MLP, a timm ResNet with BatchNorm buffers, a tiny tied-embedding GPT-2, each saved in its real
format); sharded safetensors through their index; bf16 checkpoints; the model is never built."""

from __future__ import annotations

import argparse
import functools
import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import complexity_zoo as cz
from complexity_zoo._params import parameter_plan
from complexity_zoo._stream import open_tensors
from complexity_zoo.errors import CheckpointError, NotACheckpointError, UntrustedCodeError
from complexity_zoo.testing import mlp

STREAMED = ["l2", "param_norm", "param_count", "effective_rank", "spectral_entropy", "stable_rank",
            "naive_compression", "fro_over_spectral", "log_prod_fro_over_spectral", "log_prod_spectral",
            "log_sum_spectral", "log_prod_frobenius", "log_sum_frobenius", "frobenius_distance",
            "spectral_distance", ("alpha", {"min_eigenvalues": 3}), ("alpha_weighted", {"min_eigenvalues": 3}),
            ("correlation_traps", {"min_eigenvalues": 3, "seed": 1})]


def _measure(spec) -> cz.Measure:
    return cz.get_measure(spec) if isinstance(spec, str) else cz.get_measure(spec[0], **spec[1])


def _no_model_at(monkeypatch):
    def refuse(self, step, device=None):
        raise AssertionError("the model was built although every measure is tensors_only")

    monkeypatch.setattr(cz.Trajectory, "model_at", refuse)


def assert_streaming_equals_model_path(traj: cz.Trajectory, specs, monkeypatch) -> None:
    """compare() streams (model_at is refused) and gives what each measure gives on the model."""
    models = {s: traj.model_at(s) for s in traj.steps}
    init = models[traj.steps[0]]
    expected = {}
    for spec in specs:
        m = _measure(spec)
        for step, model in models.items():
            expected[m.name, step] = m(model, init=init) if m.needs_init else m(model)
    with monkeypatch.context() as patch:
        _no_model_at(patch)
        # at the threads the expected values had: torch's reductions change in the last bit with them
        result = cz.compare(traj, list(specs), progress=False, strict=True, threads=torch.get_num_threads())
    for (name, step), want in expected.items():
        got = result.dataset[name].sel(run=traj.name, step=step).item()
        assert got == want.value, (name, step, got, want.value)
        assert result.extras(name, step=step).get("per_layer") == want.extras.get("per_layer"), name


def test_an_mlp_streams_from_safetensors_and_torch_files(tmp_path, trajectory, monkeypatch):
    assert all(_measure(s).tensors_only for s in STREAMED)
    for suffix in ("safetensors", "pt"):
        paths = []
        for step in trajectory.steps[::2]:
            path = tmp_path / f"step_{step}.{suffix}"
            sd = trajectory.checkpoint(step).state_dict()
            save_file(sd, str(path)) if suffix == "safetensors" else torch.save(sd, path)
            paths.append(path)
        traj = cz.Trajectory.from_files(paths, model=functools.partial(mlp), name=suffix)
        assert_streaming_equals_model_path(traj, STREAMED, monkeypatch)


def test_a_timm_resnet_skips_batchnorm_buffers(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from complexity_zoo.adapters import timm as zoo_timm

    args = argparse.Namespace(model="resnet18", num_classes=10, in_chans=None, input_size=None, gp=None)
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    for epoch in range(2):
        with torch.no_grad():  # a training step's worth of change, and BatchNorm statistics that move
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        model.train()(torch.randn(2, 3, 32, 32))
        torch.save({"epoch": epoch, "arch": "resnet18", "state_dict": model.state_dict(), "args": args},
                   tmp_path / f"checkpoint-{epoch}.pth.tar")
    traj = zoo_timm.load_trajectory(tmp_path)
    assert any(k.endswith("running_mean") for k in traj.checkpoint(0).state_dict())
    # No SVD or bz2 measure here (seconds per ResNet-18 pass on 2 cores): the buffers are what this case tests.
    # fold_batchnorm=False: folding needs the modules, so folding measures take the model path
    # on BatchNorm checkpoints (tests/test_batchnorm_fold.py); the stored tensors stream.
    unfolded = {"fold_batchnorm": False}
    assert_streaming_equals_model_path(
        traj, ["l2", "param_count", ("param_norm", unfolded), ("frobenius_distance", unfolded)], monkeypatch)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """Two save_pretrained checkpoints of a 2-layer GPT-2 with tied embeddings; the second sharded."""
    transformers = pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("gpt2")
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=1000, n_positions=32)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    model.save_pretrained(out / "checkpoint-1")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(out / "checkpoint-2", max_shard_size="60KB")
    return out


def test_a_tied_gpt2_streams_from_single_and_sharded_safetensors(gpt2_dir, monkeypatch):
    from complexity_zoo.adapters import huggingface as hf

    assert (gpt2_dir / "checkpoint-2" / "model.safetensors.index.json").is_file()
    with open_tensors(gpt2_dir / "checkpoint-1" / "model.safetensors") as r:
        assert "lm_head.weight" not in r.keys()  # save_pretrained drops the tied copy
    traj = hf.load_trajectory(gpt2_dir)
    plan = traj.parameter_plan()
    assert "lm_head.weight" not in plan.names and plan.aliases["transformer.wte.weight"] == ("lm_head.weight",)
    assert_streaming_equals_model_path(traj, STREAMED, monkeypatch)


def test_a_parameter_stored_only_under_its_tied_name_is_found(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
            self.b.weight = self.a.weight

    torch.manual_seed(0)
    net = Tied()
    sd = net.state_dict()
    save_file({"b.weight": sd["b.weight"].clone(), "a.bias": sd["a.bias"], "b.bias": sd["b.bias"]},
              str(tmp_path / "step_1.safetensors"))
    traj = cz.Trajectory.from_files([tmp_path / "step_1.safetensors"], model=Tied)
    streamed = cz.compare(traj, ["l2"], progress=False, strict=True)
    assert streamed.dataset["l2"].item() == cz.get_measure("l2")(net).value
    save_file({"a.bias": sd["a.bias"], "b.bias": sd["b.bias"]}, str(tmp_path / "step_2.safetensors"))
    missing = cz.Trajectory.from_files([tmp_path / "step_2.safetensors"], model=Tied)
    with pytest.raises(CheckpointError, match="a.weight.*tied names"):
        cz.compare(missing, ["l2"], progress=False, strict=True)


def test_bf16_checkpoints_equal_the_float32_model_of_the_rounded_weights(tmp_path, trajectory):
    paths = []
    for step in trajectory.steps[:2]:
        sd = {k: v.bfloat16() for k, v in trajectory.checkpoint(step).state_dict().items()}
        save_file(sd, str(tmp_path / f"step_{step}.safetensors"))
        paths.append(tmp_path / f"step_{step}.safetensors")
    traj = cz.Trajectory.from_files(paths, model=functools.partial(mlp))
    with open_tensors(paths[0]) as r:
        assert {r.get(k).dtype for k in r.keys()} == {torch.bfloat16}
    names = ["l2", "effective_rank", "stable_rank", "log_prod_spectral", "naive_compression"]
    result = cz.compare(traj, names, progress=False, strict=True)
    for step in traj.steps:
        model = mlp()
        rounded = {k: v.bfloat16().float() for k, v in trajectory.checkpoint(step).state_dict().items()}
        model.load_state_dict(rounded)
        for name in names:
            assert result.dataset[name].sel(step=step).item() == cz.get_measure(name)(model).value, name


def test_the_model_is_not_built_when_every_pending_measure_is_tensors_only(tmp_path, trajectory):
    calls = []

    def meta_only():
        calls.append(torch.empty(()).device.type)
        if torch.empty(()).device.type != "meta":
            raise RuntimeError("built for real")
        return mlp()

    def never():
        raise RuntimeError("called")

    for step in trajectory.steps[:2]:
        save_file(trajectory.checkpoint(step).state_dict(), str(tmp_path / f"step_{step}.safetensors"))
    files = sorted(tmp_path.glob("*.safetensors"))
    reference = cz.compare(cz.Trajectory.from_files(files, model=functools.partial(mlp)), ["l2", "stable_rank"],
                           progress=False, strict=True)
    for factory in (meta_only, never):  # never: the documented heuristic reads the file's float tensors
        traj = cz.Trajectory.from_files(files, model=factory)
        result = cz.compare(traj, ["l2", "stable_rank"], progress=False, strict=True)
        assert result.dataset["l2"].equals(reference.dataset["l2"])
        assert result.dataset["stable_rank"].equals(reference.dataset["stable_rank"])
    assert calls == ["meta"]  # once per trajectory, on meta
    traj = cz.Trajectory.from_files(files, model=meta_only)
    with pytest.raises(RuntimeError, match="built for real"):  # a measure that needs the model builds it
        cz.compare(traj, ["l2", "path_norm"], progress=False, strict=True)


def test_the_heuristic_drops_buffers_and_shared_storage():
    bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    sd = bn.state_dict()
    sd["tied"] = sd["0.weight"]  # a torch state dict shares a tied tensor's storage
    from complexity_zoo._params import parameters
    from complexity_zoo._stream import MappingReader

    names = [n for n, _ in parameters(MappingReader(sd), None)]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert parameter_plan(lambda: 1 / 0) is None


def test_the_safetensors_header_is_validated(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.ones(4), "b": torch.zeros(2, 2)}, str(path))
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])

    def write(h, data=raw[8 + n:]):
        blob = json.dumps(h).encode()
        path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)

    for key, value, match in [("data_offsets", [0, 10 ** 9], "outside"), ("dtype", "F128", "dtype"),
                              ("shape", [3], "bytes"), ("shape", [-4], "shape")]:
        bad = json.loads(json.dumps(header))
        bad["a"][key] = value
        write(bad)
        with pytest.raises(NotACheckpointError, match=match):
            open_tensors(path)
    write(header, raw[8 + n:] + b"extra")
    with pytest.raises(NotACheckpointError, match="cover"):
        open_tensors(path)
    path.write_bytes((10 ** 12).to_bytes(8, "little") + b"{}")
    with pytest.raises(NotACheckpointError, match="header length"):
        open_tensors(path)


def test_a_shard_index_cannot_point_outside_its_folder(tmp_path):
    save_file({"a": torch.ones(2)}, str(tmp_path / "outside.safetensors"))
    inner = tmp_path / "ckpt"
    inner.mkdir()
    (inner / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../outside.safetensors"}}))
    with pytest.raises(UntrustedCodeError):
        open_tensors(inner / "model.safetensors.index.json")


def test_gram_spectra_of_tall_matrices_match_a_float64_svd():
    from complexity_zoo.measures._weights import TALL_RATIO, singular_values

    g = torch.Generator().manual_seed(0)
    w = torch.randn(40 * TALL_RATIO, 40, generator=g) * torch.logspace(0, -3, 40)  # condition number 1e3
    exact = torch.linalg.svdvals(w.double())
    for m in (w, w.T):
        s = singular_values(m)
        assert s.dtype == torch.float64
        assert torch.allclose(s, exact, rtol=1e-9, atol=0)



def _gram_bound(w: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Per singular value, the error a float64 Gram route may carry: forming WᵀW (|ΔG| ≤ n·eps|W|ᵀ|W|,
    ‖|W|ᵀ|W|‖ ≤ m·s_max²) and its eigensolve (m·eps·s_max²) move each λ by at most δ, so s_i by
    δ / s_i; plus the reference SVD's own m·eps·s_max."""
    n, m = max(w.shape), min(w.shape)
    eps = torch.finfo(torch.float64).eps
    delta = (n * m + m) * eps * exact[0] ** 2
    return delta / exact + m * eps * exact[0]


@pytest.mark.parametrize("shape", [(64, 64), (200, 37), (37, 200), (300, 120), (120, 120)])
@pytest.mark.parametrize("decay", [1.0, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_spectra_from_the_gram_matrix_are_within_their_error_bound_of_a_float64_svd(shape, decay, dtype):
    from complexity_zoo.measures._weights import GRAM_FLOOR, singular_values

    g = torch.Generator().manual_seed(sum(shape))
    m = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], m, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], m, generator=g, dtype=torch.float64))
    w = ((u * torch.logspace(0, -decay, m, dtype=torch.float64)) @ v.T).to(dtype)  # condition number 10**decay
    exact = torch.linalg.svdvals(w.double())
    assert float(exact[-1] / exact[0]) ** 2 >= GRAM_FLOOR  # the Gram route is the one tested
    s = singular_values(w)
    assert s.dtype == torch.float64 and s.shape == exact.shape
    assert torch.all((s - exact).abs() <= _gram_bound(w, exact))


def test_ill_conditioned_matrices_take_the_svd():
    from complexity_zoo.measures._weights import singular_values

    g = torch.Generator().manual_seed(0)
    f64 = {"generator": g, "dtype": torch.float64}
    low_rank = torch.randn(50, 3, **f64) @ torch.randn(3, 40, **f64)
    graded = torch.randn(60, 60, **f64) * torch.logspace(0, -6, 60, dtype=torch.float64)
    for w in (low_rank, low_rank.T, graded):
        assert torch.equal(singular_values(w), torch.linalg.svdvals(w.T if w.shape[0] < w.shape[1] else w))


def test_spectral_measures_by_the_gram_route_equal_them_by_svd_within_float_error(monkeypatch):
    from complexity_zoo.measures import _weights

    torch.manual_seed(0)
    model = mlp(20, 64, 10)
    names = ["effective_rank", "spectral_entropy", "stable_rank", "log_prod_spectral"]
    gram = {n: cz.get_measure(n)(model).value for n in names}
    gram_alpha = cz.get_measure("alpha", min_eigenvalues=3)(model).extras["fits"]
    monkeypatch.setattr(_weights, "GRAM_FLOOR", math.inf)  # every matrix by SVD
    for n in names:  # σ relative errors ≤ ~1e-9 (bound above, condition numbers < 1e3 here)
        assert cz.get_measure(n)(model).value == pytest.approx(gram[n], rel=1e-8), n
    svd_alpha = cz.get_measure("alpha", min_eigenvalues=3)(model).extras["fits"]
    for layer, fit in svd_alpha.items():  # same x_min, α within float error of the λ
        assert fit["n_tail"] == gram_alpha[layer]["n_tail"]
        assert fit["alpha"] == pytest.approx(gram_alpha[layer]["alpha"], rel=1e-8)


def test_batched_spectra_equal_one_by_one():
    from complexity_zoo.measures._weights import spectra

    g = torch.Generator().manual_seed(0)
    mats = [(f"w{i}", torch.randn(*shape, generator=g)) for i, shape in
            enumerate([(8, 5), (8, 5), (5, 8), (8, 5), (64, 2)])]
    one = spectra(iter(mats), batch=False)
    batched = spectra(iter(mats), batch=True, batch_bytes=2 * 8 * 5 * 8)  # flushes a full batch midway
    assert list(batched) == list(one)
    for name in one:
        assert torch.allclose(batched[name], one[name], rtol=1e-12, atol=0)
