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
# Measures that do not apply to a causal LM, as the measures declare it (Measure.causal_lm).
NOT_FOR_LMS = ["path_norm", "path_norm_over_margin"]  # attention, GELU, LayerNorm: no path decomposition
TINY = {"llc": {"num_chains": 2, "num_draws": 5, "batch_size": 8}, "lmn": {"num_samples": 6},
        "kolmogorov": {"num_deltas": 4}, "gradient_noise_scale": {"batch_size": 8},
        "gradient_variance": {"batch_size": 8}, "hessian_trace": {"num_probes": 3},
        "hessian_top_eigenvalue": {"max_iterations": 5},
        **{n: {"search_depth": 3, "montecarlo_samples": 2} for n in
           ("pacbayes_flatness", "pacbayes_init", "pacbayes_mag_flatness", "pacbayes_orig", "pacbayes_mag_init",
            "pacbayes_mag_orig")},
        **{n: {"search_depth": 3, "ascent_steps": 2} for n in
           ("sharpness_flatness", "sharpness_mag_flatness", "sharpness_init", "sharpness_orig")}}




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
@pytest.mark.filterwarnings("ignore:Measure 'spec_init' failed at step 2:complexity_zoo.errors.MeasureFailedWarning")
def test_every_measure_that_applies_runs_through_the_cli(lm_run, capsys):
    table = cz.list_measures()
    assert sorted(table.loc[~table["causal_lm"], "name"]) == NOT_FOR_LMS
    assert main(["measures", "path_*", "--short"]) == 0  # the command line shows the declared fact
    shown = capsys.readouterr().out.splitlines()
    assert "causal_lm" in shown[0] and all(row.split()[6] == "False" for row in shown[1:])
    names = list(table.loc[table["causal_lm"], "name"])
    assert {"lmn", "llc", "kolmogorov", "l2", "stable_rank"} <= set(names)
    out = lm_run / "all.nc"
    rc = main(["compare", str(lm_run / "run"), "--measures", ",".join(names), "--data",
               str(lm_run / "tokens.safetensors"), "--out", str(out), "--quiet", *settings(names)])
    assert rc == 0, capsys.readouterr().err
    result = Comparison.load(out)
    # The one cell without a value: spec_init at the first checkpoint, which is the initialization.
    assert [(e.measure, e.step) for e in result.errors.itertuples()] == [("spec_init", 2)]
    assert "zero distance" in result.errors["message"].iloc[0]
    frame = result.to_dataframe().dropna(subset=["value"])
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
    assert "path norm" in message and "attention" in message


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
