"""The command-line programs, run as a user runs them."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from program_support import run_here

TINY = ["--train_size=256", "--test_size=64", "--hidden_units=16", "--eval_size=32"]


def run(module, *args, env=None):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_train_writes_everything_and_resumes(mnist_dir, tmp_path):
    workdir = str(tmp_path / "run")
    args = ["--model=lmrbm", f"--data_dir={mnist_dir}", "--missingness=square", "--missing_rate=0.6",
            f"--workdir={workdir}", *TINY]
    first = run("tfimpute.train", *args, "--epochs=1")
    assert first.returncode == 0, first.stderr
    assert "realised missing fraction 0.5867" in first.stdout  # S.O. 0.6: side 18, 1 - 324/784
    metrics = json.loads(first.stdout.strip().splitlines()[-1])
    assert metrics["epochs"] == 1 and metrics["missingness"] == "square" and 0 < metrics["test_rmse"] < 0.5
    for name in ("config.json", "metrics.json", "imputations.png", "checkpoints", "tensorboard"):
        assert os.path.exists(os.path.join(workdir, name)), name

    second = run("tfimpute.train", *args, "--epochs=2")
    assert second.returncode == 0, second.stderr
    assert "Resuming from" in second.stdout and "Epoch 1/2" not in second.stdout
    assert json.loads(second.stdout.strip().splitlines()[-1])["epochs"] == 2

    changed = run_here("tfimpute.train", *args, "--epochs=2", "--hidden_units=32")
    assert changed.returncode == 2
    assert "holds a different run (model_config.hidden_units: 16 in the workdir, 32 now)" in changed.stderr


def test_flagfile_and_environment_variable(mnist_dir, tmp_path):
    result = run("tfimpute.train", "--flagfile=configs/rbm.cfg", f"--workdir={tmp_path}", "--epochs=1",
                 *TINY, env={"TFIMPUTE_DATA_DIR": mnist_dir})
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    assert config["model"] == "rbm" and config["model_config"]["linearized"] is False
    assert config["model_config"]["learning_rate"] == 1e-4 and config["training"]["batch_size"] == 128


@pytest.mark.parametrize("args,message", [
    (["--model=gan9000"], "error: unknown model 'gan9000'; choose one of"),
    (["--data_dir=/no/such/mnist"], "error: /no/such/mnist: data directory does not exist"),
    (["--missing_rate=1.5"], "error: missing_rate must be in (0, 1), got 1.5"),
    (["--rank=tall"], "error: --rank must be 'full', 'auto' or an integer, got 'tall'"),
    (["--rank=auto", "--hidden_units=0"], "error: hidden_units must be >= 1, got 0"),
    (["--misgan_tau=0.5"], "error: --misgan_tau does not apply to lmrbm (it is a setting of misgan); "
                           "lmrbm's settings: --hidden_units, --rank"),
])
def test_bad_input_gives_one_line_errors(mnist_dir, tmp_path, args, message):
    result = run_here("tfimpute.train", f"--data_dir={mnist_dir}", f"--workdir={tmp_path}", "--epochs=1",
                      *TINY, *args)
    assert result.returncode == 2
    assert message in result.stderr
    # One line, no Traceback (TensorFlow's start-up lines: test_tensorflow_start_up_lines_only_with_verbosity).
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr


def test_setting_flags_follow_the_model_settings():
    """A setting's flag is its name; shared settings default to each model's own; lists are parsed."""
    from absl import flags as absl_flags

    from tfimpute import cli
    from tfimpute.models import registry

    values = absl_flags.FlagValues()
    cli.define_setting_flags(values)
    values(["prog", "--misgan_tau=0.25", "--vae_hidden_units=16,4"])
    assert values["hidden_units"].default == 4096 and values["latent_size"].default is None
    assert "misgan 128" in values["latent_size"].help and "dcgan 100" in values["latent_size"].help
    assert values["optimizer"].default is None and values["momentum"].default == 0.0
    assert cli.settings_from_flags(registry.get("misgan"), values)["misgan_tau"] == 0.25
    assert cli.settings_from_flags(registry.get("vae"), values)["vae_hidden_units"] == [16, 4]
    assert set(cli.settings_from_flags(registry.get("dcgan"), values)) == set(registry.get("dcgan").fields)
    model = registry.get("misgan").build({"misgan_tau": 0.25, "latent_size": None})
    assert model.get_config()["misgan_tau"] == 0.25 and model.get_config()["latent_size"] == 128


def test_tensorflow_start_up_lines_only_with_verbosity():
    quiet = run("tfimpute.train", "--model=gan9000", "--workdir=unused")
    assert quiet.stderr.strip().startswith("error: unknown model") and "cuda" not in quiet.stderr.lower()
    verbose = run("tfimpute.train", "--model=gan9000", "--workdir=unused", "--verbosity=0")
    assert len(verbose.stderr.strip().splitlines()) > 1  # TensorFlow's own start-up lines come through


def test_a_bad_list_setting_is_refused_in_one_line():
    result = run_here("tfimpute.bench", "--model=vae", "--vae_hidden_units=8,x", "--steps=1")
    assert result.returncode == 2 and "error: --vae_hidden_units: 8,x is not a list of int values" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_prints_json_last():
    result = run("tfimpute.bench", "--model=lmrbm", "--hidden_units=64", "--batch_size=16",
                 "--steps=3", "--warmup_steps=1")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"samples_per_sec", "gflops", "gemm_gflops", "ratio"} <= figures.keys()
    assert figures["samples_per_sec"] > 0
    assert figures["ratio"] == pytest.approx(figures["gflops"] / figures["gemm_gflops"], rel=0.01)


def test_stray_positional_arguments_are_refused_in_one_line():
    result = run_here("tfimpute.bench", "--model=lmrbm", "oops")
    assert result.returncode == 2 and result.stderr.strip().endswith("error: unexpected arguments: oops")


def test_every_config_flagfile_parses_and_builds_its_model():
    """Each configs/*.cfg names only existing flags and settings of its own model (flags come from the
    model settings, so a renamed setting would break a flagfile here first)."""
    script = textwrap.dedent("""
        import glob, sys
        from absl import flags
        from tfimpute import cli, train
        from tfimpute.models import registry
        train.define_flags()
        for path in sorted(glob.glob("configs/*.cfg")):
            values = flags.FLAGS
            values.unparse_flags()
            values(["train", f"--flagfile={path}"])
            spec = registry.get(values.model)
            cli.check_settings_apply(spec)
            settings = cli.settings_from_flags(spec)
            if settings.get("rank") == "auto":
                settings["rank"] = 16
            config = spec.build(settings).get_config()
            given = {name for name in spec.fields if values[name].present}
            assert given and all(config[name] == settings[name] for name in given if name != "rank"), path
            print(path, values.model, len(given))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == len(os.listdir(os.path.join(REPO, "configs")))
