"""The modular-arithmetic task: data against brute force, the paper's parameter counts,
deterministic and resumable training, presets and the CLI. Slow tests train to grokking."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from complexity_zoo.errors import DataError, InvalidSettingError
from complexity_zoo.tasks import modular, task_data
from complexity_zoo.tasks._modular_train import checkpoint_steps, geometric_epochs
from complexity_zoo.tasks.cli_train import add_train_parser
from complexity_zoo.trajectory import Trajectory


def _brute(a: int, b: int, p: int, op: str) -> int:
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    if op == "/":  # the c with c * b = a (mod p), found by search
        return next(c for c in range(p) if (c * b) % p == a)
    if op == "x^2+y^2":
        return (a**2 + b**2) % p
    return (a**2 + a * b + b**2) % p


def _all_examples(data) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([data.train[0], data.test[0]]), torch.cat([data.train[1], data.test[1]])


# -- data ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", list(modular.OPS))
@pytest.mark.parametrize("p", [7, 13])
def test_labels_match_brute_force_and_every_pair_once(op, p):
    data = modular.dataset(p, op, train_frac=0.5, seed=3)
    x, y = _all_examples(data)
    expected_pairs = {(a, b) for a in range(p) for b in range(p) if not (op == "/" and b == 0)}
    assert x.shape == (len(expected_pairs), 4)
    assert len(expected_pairs) == (p * (p - 1) if op == "/" else p * p)
    pairs = [(int(r[0]), int(r[2])) for r in x]
    assert set(pairs) == expected_pairs and len(pairs) == len(set(pairs))
    assert (x[:, 1] == p).all() and (x[:, 3] == p + 1).all()  # op and '=' tokens
    for (a, b), c in zip(pairs, y.tolist()):
        assert c == _brute(a, b, p, op)


def test_pairs_without_tokens_hold_the_same_examples():
    tok = modular.dataset(11, "*", 0.3, seed=1)
    raw = modular.dataset(11, "*", 0.3, seed=1, tokens=False)
    assert raw.train[0].shape[1] == 2
    assert torch.equal(raw.train[0], tok.train[0][:, [0, 2]])
    assert torch.equal(raw.test[1], tok.test[1])


def test_split_sizes_disjoint_and_deterministic_per_seed():
    p = 23
    a = modular.dataset(p, "+", 0.3, seed=0)
    b = modular.dataset(p, "+", 0.3, seed=0)
    c = modular.dataset(p, "+", 0.3, seed=1)
    assert a.n("train") == int(0.3 * p * p) and a.n("test") == p * p - int(0.3 * p * p)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[0], b.test[0])
    assert not torch.equal(a.train[0], c.train[0])
    train = {tuple(r.tolist()) for r in a.train[0]}
    test = {tuple(r.tolist()) for r in a.test[0]}
    assert not train & test


def test_task_spec_rebuilds_the_same_data():
    data = modular.dataset(13, "div", 0.4, seed=2)
    assert data.task == {"name": "modular", "p": 13, "op": "/", "train_frac": 0.4, "seed": 2,
                         "tokens": True}
    again = task_data(json.loads(json.dumps(data.task)))
    assert torch.equal(again.train[0], data.train[0]) and torch.equal(again.test[1], data.test[1])
    with pytest.raises(DataError, match="modular"):
        task_data({"name": "sorting"})
    with pytest.raises(DataError):
        task_data({"name": "modular", "q": 3})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(op="%"), "x\\^2\\+xy\\+y\\^2"),  # the error lists the valid ops
        (dict(p=9, op="/"), "prime"),
        (dict(p=2, op="/"), "prime"),
        (dict(p=1), "at least 2"),
        (dict(p=7.0), "integer"),
        (dict(train_frac=0.0), "train_frac"),
        (dict(train_frac=1.0), "train_frac"),
        (dict(p=3, train_frac=0.05), "empty split"),
        (dict(seed=None), "seed"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(DataError, match=match):
        modular.dataset(**{"p": 7, **kwargs})


def test_op_aliases():
    assert modular.dataset(5, "addition").task["op"] == "+"
    assert modular.dataset(5, "x2_plus_y2").task["op"] == "x^2+y^2"
    assert modular.dataset(5, "div").task["op"] == "/"


# -- models ----------------------------------------------------------------------------------
def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_transformer_parameter_counts_match_the_paper():
    assert _n_params(modular.transformer(p=113, n_layers=1)) == 242_547
    assert _n_params(modular.transformer(p=113, n_layers=2)) == 440_819
    # a positional table of 4 rows instead of p + 2: (115 - 4) * 128 fewer
    assert _n_params(modular.transformer(p=113, n_layers=1, n_positions=4)) == 242_547 - 111 * 128


def test_transformer_shapes_and_separate_projections():
    model = modular.transformer(p=11, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    x = modular.dataset(11, "-", 0.5).train[0][:5]
    assert model(x).shape == (5, 13)
    names = [n for n, p in model.named_parameters() if p.ndim >= 2]
    assert {"blocks.0.attn.q.weight", "blocks.0.attn.k.weight", "blocks.0.attn.v.weight",
            "blocks.0.attn.out.weight"} <= set(names)
    with pytest.raises(DataError):
        model(torch.zeros(3, 200, dtype=torch.long))


def test_mlp_reads_tokens_and_pairs_alike():
    torch.manual_seed(0)
    model = modular.mlp(p=11, d_embed=8, d_hidden=16)
    tok = modular.dataset(11, "+", 0.5).train[0][:6]
    assert model(tok).shape == (6, 11)
    assert torch.equal(model(tok), model(tok[:, [0, 2]]))
    assert _n_params(model) == 11 * 8 + (2 * 8 + 1) * 16 + (16 + 1) * 11


# -- schedules -------------------------------------------------------------------------------
def test_checkpoint_schedules():
    epochs = geometric_epochs(10_000)
    assert len(epochs) == 33 and epochs[:6] == [1, 2, 3, 4, 6, 8] and epochs[-1] == 9_727
    assert checkpoint_steps("geometric", 50, 5, 10) == [0, 5, 10, 15, 20, 30, 40, 50]
    assert checkpoint_steps("every:4", 10, 3, 4) == [0, 4, 8, 10]
    assert checkpoint_steps([3, 7, 99], 10, 1, 10) == [0, 3, 7, 10]
    for bad in ("every:0", "every:x", "sometimes", [1.5]):
        with pytest.raises(InvalidSettingError):
            checkpoint_steps(bad, 10, 1, 10)


# -- training --------------------------------------------------------------------------------
TINY = dict(p=11, op="+", train_frac=0.5, model="mlp", model_kwargs={"d_embed": 8, "d_hidden": 16},
            epochs=4, batch_size=16, weight_decay=0.5, noise_std=1e-2, spectral_penalty=0.1,
            checkpoints="every:5", seed=7, progress=False)
# 60 training examples / batch 16 -> 4 steps per epoch, 16 steps; checkpoints 0,5,10,15,16.


def _read_run(path: Path) -> tuple[dict[int, dict[str, torch.Tensor]], pd.DataFrame]:
    ckpts = {int(f.stem.split("_")[1]): load_file(str(f)) for f in sorted(path.glob("checkpoints/*"))}
    return ckpts, pd.read_csv(path / "metrics.csv")


def _assert_same_run(a: Path, b: Path) -> None:
    ca, ma = _read_run(a)
    cb, mb = _read_run(b)
    assert sorted(ca) == sorted(cb)
    for step in ca:
        for k in ca[step]:
            assert torch.equal(ca[step][k], cb[step][k]), (step, k)
    pd.testing.assert_frame_equal(ma.drop_duplicates("step", keep="last").reset_index(drop=True),
                                  mb.reset_index(drop=True))


def test_training_is_deterministic_and_writes_a_run_folder(tmp_path):
    a = modular.train(tmp_path / "a", **TINY)
    b = modular.train(tmp_path / "b", **TINY)
    _assert_same_run(a, b)
    run = Trajectory.from_dir(a)
    assert run.steps == [0, 5, 10, 15, 16]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "epoch"} <= set(run.metrics.columns)
    assert run.metrics["epoch"].tolist() == [0.0, 1.25, 2.5, 3.75, 4.0]
    meta = json.loads((a / "run.json").read_text())
    assert meta["model"] == {"factory": "complexity_zoo.tasks.modular:mlp",
                             "kwargs": {"p": 11, "d_embed": 8, "d_hidden": 16}}
    # the logged metrics are those of the saved weights on the recorded data
    data = task_data(run.task)
    ev = data.evaluate(run.model_at(15), "test")
    row = run.metrics.set_index("step").loc[15]
    assert ev["acc"] == pytest.approx(row["test_acc"]) and ev["loss"] == pytest.approx(row["test_loss"])
    # the weights moved, and another seed gives another run
    assert not torch.equal(_read_run(a)[0][0]["hidden.weight"], _read_run(a)[0][16]["hidden.weight"])
    c = modular.train(tmp_path / "c", **{**TINY, "seed": 8})
    assert not torch.equal(_read_run(a)[0][16]["hidden.weight"], _read_run(c)[0][16]["hidden.weight"])


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_at", [5, 15])  # mid-epoch (5 = epoch 1 + 1 step) and another
def test_resume_continues_to_the_uninterrupted_run(tmp_path, stop_at):
    full = modular.train(tmp_path / "full", **TINY)

    def interrupt(step, metrics):
        if step == stop_at:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        modular.train(tmp_path / "cut", **TINY, callback=interrupt)
    assert max(_read_run(tmp_path / "cut")[0]) == stop_at
    state = torch.load(tmp_path / "cut" / "resume.pt", weights_only=True)
    assert state["step"] == stop_at
    modular.train(tmp_path / "cut", **TINY, resume=True)
    _assert_same_run(full, tmp_path / "cut")


def test_resume_can_extend_and_checks_the_settings(tmp_path):
    short = modular.train(tmp_path / "run", **{**TINY, "epochs": 2})
    modular.train(short, **{**TINY, "epochs": 4}, resume=True)
    full = modular.train(tmp_path / "full", **TINY)
    ca, _ = _read_run(short)
    cb, _ = _read_run(full)
    assert torch.equal(ca[16]["hidden.weight"], cb[16]["hidden.weight"])
    with pytest.raises(InvalidSettingError, match="weight_decay"):
        modular.train(short, **{**TINY, "weight_decay": 0.1}, resume=True)
    with pytest.raises(InvalidSettingError, match="resume=True"):
        modular.train(short, **TINY)
    again = modular.train(short, **{**TINY, "epochs": 1}, overwrite=True)
    assert sorted(_read_run(again)[0]) == [0, 4]  # old checkpoints are gone


@pytest.mark.parametrize(
    "bad",
    [dict(epochs=0), dict(batch_size=-1), dict(lr=0), dict(weight_decay=-1.0), dict(noise_std=-0.1),
     dict(model="cnn"), dict(betas=(0.9, 1.0)), dict(device="tpu"), dict(model_kwargs={"depth": 3}),
     dict(model_kwargs={"p": 5})],
)
def test_train_rejects_bad_settings(tmp_path, bad):
    with pytest.raises(InvalidSettingError):
        modular.train(tmp_path / "x", **{**TINY, **bad})


def test_transformer_trains_a_few_steps(tmp_path):
    out = modular.train(tmp_path / "t", p=7, op="/", train_frac=0.5, model="transformer",
                        model_kwargs={"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8,
                                      "d_mlp": 32},
                        epochs=3, batch_size=8, checkpoints="geometric", progress=False)
    run = Trajectory.from_dir(out)
    assert run.steps == [0, 3, 6, 9]  # 21 examples / 8: 3 steps an epoch; epochs 1, 2 and the end
    assert run.model_at(9)(task_data(run.task).test[0]).shape[1] == 9


# -- presets and CLI -------------------------------------------------------------------------
def test_presets():
    add = modular.from_preset("paper-add")
    assert (add["p"], add["op"], add["train_frac"], add["model_kwargs"], add["batch_size"],
            add["epochs"], add["weight_decay"]) == (113, "+", 0.2, {"n_layers": 1}, 512, 10_000, 1.0)
    ours = modular.from_preset("paper-div-ours")
    assert (ours["train_frac"], ours["model_kwargs"]["n_layers"], ours["noise_std"],
            ours["spectral_penalty"], ours["weight_decay"]) == (0.3, 2, 1e-3, 0.1, 1.0)
    noreg = modular.from_preset("paper-mul-noreg")
    assert (noreg["weight_decay"], noreg["noise_std"], noreg["spectral_penalty"]) == (0.0, 0.0, 0.0)
    assert modular.from_preset("cpu-small-noreg")["weight_decay"] == 0.0
    assert modular.from_preset("cpu-small")["weight_decay"] == 1.0
    assert modular.from_preset("cpu-small", epochs=3)["epochs"] == 3
    expected = {f"paper-{o}{s}" for o, s in itertools.product(["add", "sub", "mul", "div"],
                                                              ["", "-noreg", "-ours"])}
    assert expected | {"cpu-small", "cpu-small-noreg"} == set(modular.PRESETS)
    with pytest.raises(InvalidSettingError, match="cpu-small"):
        modular.from_preset("paper-pow")
    with pytest.raises(InvalidSettingError, match="weight_decay"):
        modular.from_preset("cpu-small", weight_dacay=1.0)
    modular.from_preset("paper-add")["model_kwargs"]["n_layers"] = 5  # a copy, not the preset
    assert modular.PRESETS["paper-add"]["model_kwargs"]["n_layers"] == 1


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="complexity-zoo")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_flags_override_the_preset(tmp_path, capsys):
    args = _cli(["train", "modular", "--preset", "cpu-small", "--p", "11", "--op", "*",
                 "--weight-decay", "0.5", "--epochs", "2", "--train-frac", "0.5",
                 "--d-hidden", "16", "--d-embed", "8", "--batch-size", "32",
                 "--checkpoints", "every:2", "--out", str(tmp_path / "r"), "--quiet"])
    assert args.func(args) == 0
    run = Trajectory.from_dir(tmp_path / "r")
    assert run.task["op"] == "*" and run.task["p"] == 11
    cfg = json.loads((tmp_path / "r" / "train_config.json").read_text())
    assert (cfg["weight_decay"], cfg["epochs"], cfg["model"]) == (0.5, 2, "mlp")
    assert cfg["model_kwargs"] == {"d_embed": 8, "d_hidden": 16}
    assert run.steps == [0, 2, 4]
    assert str(tmp_path / "r") in capsys.readouterr().out


def test_cli_preset_defaults_and_errors(tmp_path):
    args = _cli(["train", "modular", "--preset", "paper-sub-ours", "--out", str(tmp_path / "x")])
    from complexity_zoo.tasks.cli_train import train_kwargs

    kw = train_kwargs(args)
    assert kw == {**modular.from_preset("paper-sub-ours"), "device": "cpu", "progress": True,
                  "resume": False, "overwrite": False}
    args = _cli(["train", "modular", "--preset", "nope", "--out", str(tmp_path / "y")])
    with pytest.raises(InvalidSettingError, match="paper-add"):
        args.func(args)


# -- slow: the grokking claims ---------------------------------------------------------------
def _first_step(df: pd.DataFrame, column: str, threshold: float) -> int | None:
    hit = df[df[column] >= threshold]
    return int(hit["step"].iloc[0]) if len(hit) else None


@pytest.mark.slow
def test_cpu_small_groks(tmp_path):
    run = Trajectory.from_dir(modular.train(tmp_path / "g", **modular.from_preset("cpu-small"),
                                            progress=False))
    df = run.metrics
    fit, gen = _first_step(df, "train_acc", 1.0), _first_step(df, "test_acc", 0.95)
    assert fit is not None and gen is not None
    assert gen >= 2 * fit  # generalization comes long after memorization
    assert df["test_acc"][df["step"] <= fit].max() < 0.1  # and not alongside it
    assert df["test_acc"].iloc[-1] >= 0.95


@pytest.mark.slow
def test_cpu_small_noreg_does_not_generalize(tmp_path):
    run = Trajectory.from_dir(modular.train(tmp_path / "n", **modular.from_preset("cpu-small-noreg"),
                                            progress=False))
    df = run.metrics
    assert _first_step(df, "train_acc", 1.0) is not None
    assert df["test_acc"].max() < 0.5


@pytest.mark.slow
def test_spectral_penalty_lowers_effective_rank(tmp_path):
    # Measured (cpu-small, seed 0): mean effective rank at step 3000 is 122.9 without the
    # penalty and 86.0 with 0.1 (97.4 vs 22.6 at step 8000).
    from complexity_zoo import get_measure

    base = {**modular.from_preset("cpu-small"), "epochs": 375, "checkpoints": "every:3000",
            "progress": False}
    plain = Trajectory.from_dir(modular.train(tmp_path / "plain", **base))
    penal = Trajectory.from_dir(modular.train(tmp_path / "pen", **{**base, "spectral_penalty": 0.1}))
    er = get_measure("effective_rank")
    assert plain.steps == penal.steps == [0, 3000]
    assert er(plain.model_at(0)).value == er(penal.model_at(0)).value  # same initialization
    r_plain, r_pen = er(plain.model_at(3000)).value, er(penal.model_at(3000)).value
    assert r_pen < 0.8 * r_plain


@pytest.mark.slow  # spawning two processes that import torch: ~10 s idle, over a minute on a loaded machine
def test_runs_trained_at_once_in_processes_equal_runs_trained_one_by_one(tmp_path):
    from complexity_zoo.tasks.report import _train_all

    settings = {"a": {k: v for k, v in TINY.items() if k != "progress"}}
    settings["b"] = {**settings["a"], "seed": 8, "weight_decay": 0.0}
    apart = _train_all(tmp_path / "apart", settings, "cpu", False, workers=1)
    together = _train_all(tmp_path / "together", settings, "cpu", False, workers=2)
    assert [p.name for p in together] == ["a", "b"]
    for x, y in zip(apart, together):
        _assert_same_run(x, y)
