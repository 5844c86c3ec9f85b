"""complexity-zoo compare on a transformers.Trainer output folder of a tiny GPT-2, with token data."""

from __future__ import annotations

import math

import pytest
import torch

import complexity_zoo as cz
from complexity_zoo.adapters.folders import detect_format, load_folder
from complexity_zoo.cli import main
from complexity_zoo.comparison import Comparison
from complexity_zoo.errors import CheckpointNotFoundError, ComplexityZooError, DataError, TrajectoryError
from complexity_zoo.testing import TokenDataset

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

VOCAB, SEQ = 64, 12
# Measures that do not apply to a causal LM (see the report in README): why, in the test names below.
NEEDS_CLASS_LABELS = ["inverse_margin", "log_prod_frobenius_over_margin", "log_prod_spectral_over_margin",
                      "log_sum_frobenius_over_margin", "log_sum_spectral_over_margin", "spec_init", "spec_orig"]
NEEDS_CROSS_ENTROPY_ACCURACY = ["pacbayes_flatness", "pacbayes_init", "pacbayes_mag_flatness", "pacbayes_orig",
                                "sharpness_flatness", "sharpness_mag_flatness", "pacbayes_mag_init",
                                "pacbayes_mag_orig",
                                "sharpness_init", "sharpness_orig"]
NEEDS_RELU_NET = ["path_norm", "path_norm_over_margin"]
NEEDS_SECOND_DERIVATIVES = ["fisher_rao_norm", "hessian_top_eigenvalue", "hessian_trace"]  # sdpa attention, CPU
NOT_FOR_LMS = NEEDS_CLASS_LABELS + NEEDS_CROSS_ENTROPY_ACCURACY + NEEDS_RELU_NET + NEEDS_SECOND_DERIVATIVES
TINY = {"llc": {"num_chains": 2, "num_draws": 5, "batch_size": 8}, "lmn": {"num_samples": 6},
        "kolmogorov": {"num_deltas": 4}, "gradient_noise_scale": {"batch_size": 8},
        "gradient_variance": {"batch_size": 8}}




@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """checkpoint-{2,4}/ of a Trainer run, and the tokens it saw, as a safetensors data file."""
    root = tmp_path_factory.mktemp("lm")
    g = torch.Generator().manual_seed(0)
    train, test = torch.randint(0, VOCAB, (32, SEQ), generator=g), torch.randint(0, VOCAB, (16, SEQ), generator=g)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    args = transformers.TrainingArguments(
        output_dir=str(root / "run"), max_steps=4, save_steps=2, eval_steps=2, eval_strategy="steps",
        logging_steps=1, per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=3e-3,
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args, train_dataset=TokenDataset(train),
                         eval_dataset=TokenDataset(test)).train()
    safetensors_torch.save_file({"train.input_ids": train, "test.input_ids": test}, str(root / "tokens.safetensors"))
    return root


def settings(names):
    return [f"--set={n}.{k}={v}" for n in names for k, v in TINY.get(n, {}).items()]


# gradient_noise's vmap over GPT-2's CPU sdpa attention falls back to a loop, with torch's warning.
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_every_measure_that_applies_runs_through_the_cli(lm_run, capsys):
    names = [n for n in cz.list_measures()["name"] if n not in NOT_FOR_LMS]
    assert {"lmn", "llc", "kolmogorov", "l2", "stable_rank"} <= set(names)
    out = lm_run / "all.nc"
    rc = main(["compare", str(lm_run / "run"), "--measures", ",".join(names), "--data",
               str(lm_run / "tokens.safetensors"), "--out", str(out), "--quiet", "--strict", *settings(names)])
    assert rc == 0, capsys.readouterr().err
    frame = Comparison.load(out).to_dataframe()
    assert set(frame["measure"]) == set(names) and set(frame["step"]) == {2, 4}
    assert all(math.isfinite(v) for v in frame["value"])
    lmn = Comparison.load(out).extras("lmn", 4, "run")
    assert lmn["layer"] == "transformer.wte"


def test_data_file_is_the_causal_lm_loss_hf_computes(lm_run):
    data = cz.Data.from_file(lm_run / "tokens.safetensors")
    model = load_folder(lm_run / "run").model_at(4)
    ids = data.test[0]
    with torch.no_grad():
        reference = model(ids, labels=ids).loss.item()  # every sequence counts SEQ - 1 tokens: the means agree
    assert data.loss_name == "causal_lm" and data.evaluate(model, "test")["loss"] == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("name", NOT_FOR_LMS)
def test_measures_that_do_not_apply_fail_with_a_library_error(lm_run, name):
    traj = load_folder(lm_run / "run")
    data = cz.Data.from_file(lm_run / "tokens.safetensors")
    measure = cz.get_measure(name)
    with pytest.raises(ComplexityZooError) as info:
        measure(traj.model_at(4), data, **({"init": traj.model_at(2)} if measure.needs_init else {}))
    message = str(info.value)
    assert name in message or any(why in message for why in ("PAC-Bayes", "path norm", "for a classifier"))


def test_margins_on_a_language_model_say_why_they_do_not_apply(lm_run):
    from complexity_zoo.errors import DataError

    traj = load_folder(lm_run / "run")
    data = cz.Data.from_file(lm_run / "tokens.safetensors")
    with pytest.raises(DataError, match="defined for a classifier"):
        cz.get_measure("inverse_margin")(traj.model_at(4), data)


def test_formats_are_told_by_file_names(lm_run, tmp_path):
    assert detect_format(lm_run / "run") == "hf"
    saved = load_folder(lm_run / "run").save(tmp_path / "saved")
    assert detect_format(saved) == "run"
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "checkpoint-3.pth.tar").write_bytes(b"")
    assert detect_format(tmp_path / "timm") == "timm"
    (tmp_path / "pl" / "version_0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "pl" / "version_0" / "checkpoints" / "epoch=0-step=2.ckpt").write_bytes(b"")
    assert detect_format(tmp_path / "pl") == "lightning"
    with pytest.raises(TrajectoryError, match="Lightning checkpoints, which do not say how to build"):
        load_folder(tmp_path / "pl")
    (tmp_path / "timm" / "run.json").write_text("{}")
    with pytest.raises(TrajectoryError, match=r"several formats \(run, timm\): pass --format"):
        detect_format(tmp_path / "timm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="checkpoint-N/ folders"):
        detect_format(tmp_path / "empty")


def test_bad_data_files_are_named(lm_run, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    safetensors_torch.save_file({"train.tokens": torch.zeros(2, 3, dtype=torch.long)}, str(bad))
    with pytest.raises(DataError, match=r"\{train,test\}\.\{x,y\}"):
        cz.Data.from_file(bad)
    rc = main(["compare", str(lm_run / "run"), "--measures", "lmn", "--out", str(tmp_path / "r.nc"), "--quiet"])
    assert rc == 2 and "--data FILE" in capsys.readouterr().err
