"""Pairs outside the library: the README's example run verbatim through the CLI (train, evaluate,
sample, resume), where a run's pair came from, entry points, the pair contract's errors, --debug
and the one-line origin of an error, ``models NAME``, ``train --help`` and ``--version``."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ppl_dgm import cli, registry
from ppl_dgm.config import OPTIONS, TrainConfig
from ppl_dgm.contract import ContractError, PairWarning

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_TRAIN = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "20",
              "--labelled-batch-size", "10", "--eval-batch-size", "500", "--no-progress"]
TINY_EVAL = ["--iw-samples", "20", "--chunk-size", "20", "--subset", "10"]


def readme_blocks() -> tuple[str, list[str]]:
    """The README's example pair (the python block starting ``# my_pair.py``) and the commands of
    the bash block after it, from its section "Writing a new model/guide pair"."""
    text = README.read_text()
    section = text[text.index("## Writing a new model/guide pair"):]
    code = re.search(r"```python\n(# my_pair\.py.*?)```", section, re.S)
    assert code, "the README's section has no python block starting with '# my_pair.py'"
    bash = re.search(r"```bash\n(.*?)```", section[code.end():], re.S)
    assert bash, "the README's section has no bash block after its example"
    commands = [line for line in bash.group(1).splitlines() if line.startswith("ppl-dgm ")]
    return code.group(1), commands


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A user's folder as the working directory; sys.path restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("PPL_DGM_DEBUG", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's pair trained for two steps in a folder of its own: that folder."""
    folder = tmp_path_factory.mktemp("user")
    code, _ = readme_blocks()
    (folder / "my_pair.py").write_text(code)
    saved_path = list(sys.path)
    try:
        assert cli.main(["train", str(folder / "my_pair.py:build"), "--out", str(folder / "run"),
                         *TINY_TRAIN]) == 0
    finally:
        sys.path[:] = saved_path
    return folder


# ------------------------------------------------------------------------------------- the README
def test_readme_example_trains_evaluates_samples_and_resumes(isolated, capsys):
    code, commands = readme_blocks()
    assert max(len(line) for line in code.splitlines()) <= 110
    (isolated / "my_pair.py").write_text(code)
    kinds = [shlex.split(c, comments=True)[1] for c in commands]
    assert kinds == ["models", "train", "evaluate", "sample", "train"]
    for command in commands:
        argv = shlex.split(command, comments=True)[1:]
        if argv[0] == "train":
            argv += TINY_TRAIN + (["--epochs", "2"] if "--resume" in argv else [])
        if argv[0] == "evaluate":
            argv += TINY_EVAL
        rc, out, err = run_cli(argv, capsys)
        assert rc == 0, (command, err)
        if argv[0] == "models":
            assert "z_dim = 8" in out and "*epochs = 30" in out

    run = isolated / "runs" / "ccp"
    config = json.loads((run / "config.json").read_text())
    digest = hashlib.sha256((isolated / "my_pair.py").read_bytes()).hexdigest()
    assert config["source"]["kind"] == "file"
    assert config["source"]["path"] == str((isolated / "my_pair.py").resolve())
    assert config["source"]["sha256"] == digest
    assert config["model"] == "my_pair" and config["epochs"] == 2
    # the evaluation and samples of epoch 1 were moved aside by the resume (they describe the
    # checkpoint of epoch 1, not the run's new summary)
    assert not (run / "evaluation.json").exists() and not (run / "samples.png").exists()
    evaluation = json.loads((run / "stale-epoch-1" / "evaluation.json").read_text())
    assert np.isfinite(evaluation["test_log_likelihood"]) and evaluation["n_test_evaluated"] == 10
    assert 0 <= evaluation["test_error"] <= 1 and evaluation["epochs"] == 1
    assert (run / "stale-epoch-1" / "samples.png").stat().st_size > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 4  # resumed: 2 steps more


# ------------------------------------------------------------------------------------- sources
def _copy_run(trained: Path, dest: Path, **source_changes) -> Path:
    run = dest / "run"
    shutil.copytree(trained / "run", run)
    config = json.loads((run / "config.json").read_text())
    config["source"].update(source_changes)
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_moved_source_file_is_a_clear_error(trained, isolated, capsys):
    moved = isolated / "elsewhere.py"
    shutil.copy(trained / "my_pair.py", moved)
    run = _copy_run(trained, isolated, path=str(moved))
    moved.unlink()
    for argv in (["evaluate", str(run), *TINY_EVAL], ["sample", str(run)],
                 ["train", "--resume", "--out", str(run), "--epochs", "2", "--no-progress"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ppl-dgm: error: ")
        assert str(moved) in lines[0] and "is gone" in lines[0] and "config.json" in lines[0]
    assert not (run / "samples.png").exists()


def test_relocated_and_changed_source_file_warns(trained, isolated, capsys):
    changed = isolated / "changed.py"
    changed.write_text((trained / "my_pair.py").read_text() + "\n# a comment\n")
    run = _copy_run(trained, isolated, path=str(changed))  # the fix the "is gone" error names
    with pytest.warns(PairWarning, match="changed since this run was trained") as record:
        rc, out, err = run_cli(["evaluate", str(run), *TINY_EVAL], capsys)
    assert rc == 0, err
    assert str(changed) in str(record[0].message)
    assert (run / "evaluation.json").is_file()
    assert cli._format_warning(record[0].message, PairWarning, "x.py", 1).startswith("ppl-dgm: warning: ")


def test_sample_warns_once_about_a_changed_file(trained, isolated, capsys):
    """``sample`` finds the run's pair twice (the task, then the checkpoint's pair): one warning."""
    changed = isolated / "changed_once.py"
    changed.write_text((trained / "my_pair.py").read_text() + "\n# another comment\n")
    run = _copy_run(trained, isolated, path=str(changed))
    with pytest.warns(PairWarning) as record:
        rc, out, err = run_cli(["sample", str(run)], capsys)
    assert rc == 0, err
    changed_warnings = [w for w in record if "changed since this run was trained" in str(w.message)]
    assert len(changed_warnings) == 1, [str(w.message) for w in record]


def test_module_reference_and_entry_point(isolated, capsys, monkeypatch):
    code, _ = readme_blocks()
    package = isolated / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ccp.py").write_text(code)
    info = isolated / "mypkg-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[ppl_dgm.models]\nccp-vae = mypkg.ccp:build\n")
    monkeypatch.syspath_prepend(str(isolated))
    importlib.invalidate_caches()

    spec = registry.resolve_spec("mypkg.ccp:build")
    assert (spec.name, spec.task, spec.source["kind"], spec.source["module"]) == (
        "ccp", "semi-supervised", "module", "mypkg.ccp")

    rc, out, _ = run_cli(["models"], capsys)
    assert rc == 0 and re.search(r"^ccp-vae\s+pyro\s+semi-supervised .*\[mypkg 0\.3\]$", out, re.M)
    rc, out, _ = run_cli(["models", "ccp-vae"], capsys)
    assert rc == 0 and "entry point ccp-vae = mypkg.ccp:build (mypkg 0.3)" in out

    rc, _, err = run_cli(["train", "ccp-vae", "--out", "runs/ep", *TINY_TRAIN], capsys)
    assert rc == 0, err
    config = json.loads(Path("runs/ep/config.json").read_text())
    assert config["model"] == "ccp-vae"
    assert config["source"] == {"kind": "entry_point", "name": "ccp-vae", "value": "mypkg.ccp:build",
                                "distribution": "mypkg 0.3"}
    rc, _, err = run_cli(["evaluate", "runs/ep", *TINY_EVAL], capsys)
    assert rc == 0, err

    shutil.rmtree(info)  # uninstalled: the run says where its pair came from
    importlib.invalidate_caches()
    rc, _, err = run_cli(["evaluate", "runs/ep", *TINY_EVAL], capsys)
    assert rc == 2 and "not installed any more" in err and "mypkg 0.3" in err


def test_python_api(isolated):
    """The same pair through the Python API: ``resolve_spec`` + ``resolve`` + the trainer, and a
    plain ``TrainConfig(model="path:build")``; both runs record their source and evaluate."""
    from ppl_dgm.config import resolve
    from ppl_dgm.evaluate import evaluate_run
    from ppl_dgm.training.loop import Trainer

    code, _ = readme_blocks()
    (isolated / "my_pair.py").write_text(code)
    tiny = {"dataset": "digits", "epochs": 1, "steps_per_epoch": 2, "batch_size": 20,
            "labelled_batch_size": 10, "device": "cpu"}
    spec = registry.resolve_spec("my_pair.py:build")
    assert spec.hparams == {"z_dim": 8, "hidden": 256} and spec.train == {"epochs": 30}
    configs = [resolve(spec, tiny, {"z_dim": 4}), TrainConfig(model="my_pair.py:build", hparams={
        "z_dim": 4, "hidden": 16}, **tiny)]
    import torch

    with torch.no_grad():  # the contract check differentiates the ELBO whatever the grad mode
        Trainer(configs[0], isolated / "built_under_no_grad", progress=False)
    for i, config in enumerate(configs):
        Trainer(config, isolated / f"api{i}", progress=False).fit()
        saved = json.loads((isolated / f"api{i}" / "config.json").read_text())
        assert saved["model"] == "my_pair" and saved["hparams"]["z_dim"] == 4
        assert saved["source"]["path"] == str(isolated / "my_pair.py")
        record = evaluate_run(isolated / f"api{i}", iw_samples=10, chunk_size=10, subset=5,
                              progress=False)
        assert np.isfinite(record["test_log_likelihood"])


# ------------------------------------------------------------------------------------- the contract
def _variant(code: str, old: str, new: str) -> str:
    assert old in code, old
    return code.replace(old, new)


CONTRACT_CASES = {
    # name: (list of (old, new) edits of the README's pair, expected text of the one-line error)
    "no build": ([("def build(hparams, data):", "def make(hparams, data):")],
                 "has no 'build': define `def build(hparams, data)`"),
    "no task": ([("@model_spec(", "_unused = dict(")], "does not say its task: decorate it"),
    "wrong return type": ([("return Pair(Model(*sizes), Guide(*sizes, alpha=hparams[\"alpha\"]))",
                            "return Model(*sizes), Guide(*sizes, alpha=hparams[\"alpha\"])")],
                          "build returned tuple, not a Pair: return ppl_dgm.pair.Pair(p, q)"),
    "guide site missing from model": (
        [("                pyro.sample(\"z\", dist.Normal(loc, log_scale.exp()).to_event(1))",
          "                pyro.sample(\"z\", dist.Normal(loc, log_scale.exp()).to_event(1))\n"
          "                pyro.sample(\"w\", dist.Normal(loc, 1.0).to_event(1))")],
        "guide site(s) ['w'] are not in the model"),
    "model site missing from guide": (
        [("            pyro.sample(\"x\", dist.Bernoulli",
          "            pyro.sample(\"u\", dist.Normal(x.new_zeros(()), 1.0))\n"
          "            pyro.sample(\"x\", dist.Bernoulli")],
        "model site(s) ['u'] have no site in the guide"),
    "label not enumerated": (
        [("label_site(self.classifier(x), y, self.alpha, beta)",
          "pyro.sample(\"y\", dist.Categorical(logits=self.classifier(x)), obs=y)")],
        "label site \"y\" is not marked for enumeration"),
    "label cannot be enumerated": (
        [("label_site(self.classifier(x), y, self.alpha, beta)",
          "pyro.sample(\"y\", dist.Normal(self.classifier(x)[:, 0], 1.0), obs=y)")],
        "label site \"y\" cannot be enumerated: Normal has no finite support"),
    "no label in the guide": (
        [("            label_site(self.classifier(x), y, self.alpha, beta)", "")],
        "the guide samples no label site \"y\" when y is None"),
    "no classifier": ([("    def classify(self, x, num_samples=1):",
                        "    def predict(self, x, num_samples=1):")],
                      "semi-supervised pairs need a classifier: add classify(x, num_samples=1)"),
    "classifier shape": ([("return torch.softmax(self.classifier(x), dim=-1)",
                           "return torch.softmax(self.classifier(x), dim=-1)[:, :3]")],
                         "the classifier gave shape (4, 3) for 4 points"),
    "forward signature": ([("    def forward(self, x, y=None, *, beta=1.0):\n        with "
                            "pyro.plate(\"data\", x.shape[0]):\n            label_site",
                            "    def forward(self, x, y=None):\n        beta = 1.0\n        with "
                            "pyro.plate(\"data\", x.shape[0]):\n            label_site")],
                          "Guide.forward(x, y=None) cannot be called as Guide.forward(x, y=None, "
                          "beta=1.0)"),
    "pyro.param": ([("            pyro.sample(\"x\", dist.Bernoulli",
                     "            pyro.param(\"bias\", torch.zeros(1))\n"
                     "            pyro.sample(\"x\", dist.Bernoulli")],
                   "the model creates pyro.param('bias'), which the trainer does not optimise"),
    "model not a module": ([("return Pair(Model(*sizes),", "return Pair(Model(*sizes).forward,")],
                           "the model p is a method: make it a torch.nn.Module"),
    "sampler shape": ([("return torch.sigmoid(self.decoder(z))",
                        "return torch.sigmoid(self.decoder(z))[:, :5]")],
                      "sample_x(2) gave shape (2, 5): it must give Bernoulli means of shape (2, 64)"),
}


@pytest.mark.parametrize("case", sorted(CONTRACT_CASES))
def test_contract_error(case, isolated, capsys):
    edits, expected = CONTRACT_CASES[case]
    code, _ = readme_blocks()
    for old, new in edits:
        code = _variant(code, old, new)
    (isolated / "my_pair.py").write_text(code)
    rc, _, err = run_cli(["train", "my_pair.py:build", "--out", "runs/bad", *TINY_TRAIN], capsys)
    lines = [line for line in err.strip().splitlines() if not line.startswith("ppl-dgm: warning:")]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("ppl-dgm: error: "), err
    assert expected in lines[0], lines[0]
    assert not (isolated / "runs" / "bad" / "checkpoint.pt").exists()  # before any training step
    assert not (isolated / "runs" / "bad" / "history.nc").exists()


def test_pair_without_classifier_or_sampler(isolated, capsys):
    """Unsupervised, no classify, no sample_x: trains and evaluates its likelihood; warns before
    training that it cannot sample, and ``sample`` says so."""
    code, _ = readme_blocks()
    for old, new in [("task=\"semi-supervised\"", "task=\"unsupervised\""),
                     ("    def classify(self, x, num_samples=1):\n", "    def unused(self, x):\n"),
                     ("    @torch.no_grad()\n    def sample_x(self, n, y=None):",
                      "    @torch.no_grad()\n    def unused(self, n, y=None):"),
                     ("alpha=hparams[\"alpha\"]", "alpha=0.0")]:
        code = _variant(code, old, new)
    (isolated / "my_pair.py").write_text(code)
    with pytest.warns(PairWarning) as record:  # before training: nothing written yet
        rc, out, err = run_cli(["train", "my_pair.py:build", "--out", "runs/u", *TINY_TRAIN], capsys)
    assert rc == 0, err
    assert "my_pair.py:build cannot sample" in str(record[0].message)
    assert "sample_x(n, y=None)" in str(record[0].message)
    assert "test ELBO" in out and "test accuracy" not in out
    rc, out, err = run_cli(["evaluate", "runs/u", *TINY_EVAL], capsys)
    assert rc == 0 and "test_log_likelihood" in out and "test_error" not in out
    rc, _, err = run_cli(["sample", "runs/u"], capsys)
    assert rc == 2 and "cannot sample x: add sample_x(n, y=None)" in err


def test_numpyro_contract(isolated):
    """The NumPyro checks on a tiny NumPyro pair: a good pair passes, a guide site missing from
    the model and a missing classifier are refused."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    from ppl_dgm.contract import check_numpyro_pair
    from ppl_dgm.numpyro_pair import NumPyroPair

    def model(x, y=None, *, beta=1.0, train=True):
        w = numpyro.param("w", jnp.zeros((2, x.shape[1])))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=z @ w).to_event(1), obs=x)

    def guide(x, y=None, *, beta=1.0, train=True, extra=False):
        loc = numpyro.param("loc", jnp.zeros(2))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            if extra:
                numpyro.sample("w", dist.Normal(0.0, 1.0))

    def sampler(params, key, n, y=None):
        return jax.nn.sigmoid(jax.random.normal(key, (n, 2)) @ params["w"])

    spec = registry.ModelSpec(name="tiny", task="unsupervised", build="unused:build", backend="numpyro")
    x, y, key = jnp.ones((4, 6)), jnp.zeros(4, jnp.int32), jax.random.PRNGKey(0)
    check_numpyro_pair(NumPyroPair(model, guide, sampler=sampler), spec, x, y, 10, key)
    bad = NumPyroPair(model, lambda x, y=None, *, beta=1.0, train=True: guide(x, y, extra=True),
                      sampler=sampler)
    with pytest.raises(ContractError, match=r"guide site\(s\) \['w'\] are not in the model"):
        check_numpyro_pair(bad, spec, x, y, 10, key)
    semi = dataclasses.replace(spec, task="supervised")
    with pytest.raises(ContractError, match="supervised pairs need a classifier"):
        check_numpyro_pair(NumPyroPair(model, guide), semi, x, y, 10, key)


# ------------------------------------------------------------------------------------- errors
BROKEN_LINE = "        return torch.sigmoid(self.decoder(z[..., :3]))"


def _broken_decoder(isolated: Path) -> int:
    """The README's pair with a decoder that gets 3 inputs instead of 8; the line number of it."""
    code, _ = readme_blocks()
    code = _variant(code, "pyro.sample(\"x\", dist.Bernoulli(logits=self.decoder(z))",
                    "pyro.sample(\"x\", dist.Bernoulli(logits=self.decoder(z[..., :3]))")
    (isolated / "my_pair.py").write_text(code)
    return next(i for i, line in enumerate(code.splitlines(), 1) if "self.decoder(z[..., :3])" in line)


def test_one_line_error_names_file_and_line(isolated, capsys):
    line = _broken_decoder(isolated)
    rc, _, err = run_cli(["train", "my_pair.py:build", "--out", "runs/b", *TINY_TRAIN], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "shapes cannot be multiplied" in err
    assert f"(at my_pair.py:{line} in forward; --debug shows the traceback)" in err


def test_error_in_build_names_file_and_line(isolated, capsys):
    code, _ = readme_blocks()
    code = _variant(code, "sizes = (data.x_dim,", "sizes = (data.x_dimension,")
    (isolated / "my_pair.py").write_text(code)
    line = next(i for i, text in enumerate(code.splitlines(), 1) if "data.x_dimension" in text)
    rc, _, err = run_cli(["train", "my_pair.py:build", "--out", "runs/b", *TINY_TRAIN], capsys)
    assert rc != 0 and len(err.strip().splitlines()) == 1
    assert "AttributeError" in err and f"my_pair.py:{line} in build" in err


def test_debug_shows_the_traceback(isolated, capsys, monkeypatch):
    _broken_decoder(isolated)
    argv = ["train", "my_pair.py:build", "--out", "runs/b", *TINY_TRAIN]
    with pytest.raises(ContractError) as info:
        cli.main(["--debug", *argv])
    assert isinstance(info.value.__cause__, RuntimeError)  # the model's own error, with its frames
    monkeypatch.setenv("PPL_DGM_DEBUG", "1")
    with pytest.raises(ContractError):
        cli.main(argv)


def test_unknown_reference_errors(isolated, capsys):
    rc, _, err = run_cli(["train", "nowhere.py:build", *TINY_TRAIN], capsys)
    assert rc == 2 and "no file" in err and "nowhere.py" in err
    rc, _, err = run_cli(["train", "no_such_module_xyz:build", *TINY_TRAIN], capsys)
    assert rc == 2 and "no module named 'no_such_module_xyz'" in err
    rc, _, err = run_cli(["train", "m3", *TINY_TRAIN], capsys)
    assert rc == 2 and "no model 'm3'" in err and "path/to/file.py:build" in err


# ------------------------------------------------------------------------------------- CLI
def test_models_name_prints_effective_defaults(isolated, capsys):
    code, _ = readme_blocks()
    (isolated / "my_pair.py").write_text(code)
    rc, out, _ = run_cli(["models", "my_pair.py:build"], capsys)
    assert rc == 0
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)
              if f.default is not dataclasses.MISSING}
    assert "my_pair (pyro, semi-supervised)" in out
    assert "    z_dim = 8\n" in out and "    hidden = 256\n" in out
    assert "   *epochs = 30\n" in out  # the pair's own
    for name in ("lr", "batch_size", "elbo", "seed"):  # TrainConfig's
        assert f"    {name} = {fields[name]!r}\n" in out

    rc, out, _ = run_cli(["models", "m2"], capsys)
    m2 = registry.get("m2")
    assert rc == 0 and out.count("m2 (") == len([b for n, b in registry._REGISTRY if n == "m2"])
    assert f"   *lr = {m2.train['lr']!r}\n" in out and f"    z_dim = {m2.hparams['z_dim']!r}\n" in out


def test_train_help_shows_every_default(capsys):
    parser = cli.build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for action in train._actions:
        if action.dest in ("help", "model"):
            continue
        assert action.help and len(action.help) > 10, action.dest  # says what it does
        if action.dest in OPTIONS:
            assert "default" in action.help, (action.dest, action.help)
            if "the model's, else" in action.help:
                shown = "unset" if fields[action.dest] is None else str(fields[action.dest])
                assert action.help.endswith(f"(default: the model's, else {shown})"), action.help
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the model's, else 0.001)" in text and "ppl-dgm models MODEL" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ppl-dgm {importlib.metadata.version('ppl-dgm')}"
