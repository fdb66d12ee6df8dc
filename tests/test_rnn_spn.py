"""RNN-SPN / FFN-SPN / CNN: identity initialisation, glimpse sizes, the loss, registry and CLI."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from ppl_dgm import registry
from ppl_dgm.infer.objectives import supervised_loss
from ppl_dgm.models.rnn_spn import (
    build_cnn,
    build_ffn_spn,
    build_rnn_spn,
    sequence_errors,
)
from ppl_dgm.nn.spatial import glimpse_corners, glimpse_size, identity_affine
from ppl_dgm.training.loop import DataInfo
from tests.conftest import mnist_dir

INFO = DataInfo(x_dim=10_000, image_shape=(100, 100), n_classes=10, n_train=100, n_labelled=100,
                n_unlabelled=0, sequence_length=3)
TINY_RNN = {"loc_filters": 4, "rnn_units": 16, "filters": 4, "dense": 16}
TINY_FFN = {"loc_filters": 4, "loc_dense": 8, "filters": 4, "dense": 16}
TINY_CNN = {"filters": 4, "dense": 16}


def canvases(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 100, 100, generator=torch.Generator().manual_seed(seed))


def bilinear_by_hand(image: np.ndarray, size: int) -> np.ndarray:
    """Resize with bilinear interpolation, sample points at pixel centres (align_corners=False)."""
    h, w = image.shape
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            r = (i + 0.5) * h / size - 0.5
            c = (j + 0.5) * w / size - 0.5
            r0, c0 = int(np.floor(r)), int(np.floor(c))
            dr, dc = r - r0, c - c0
            out[i, j] = ((1 - dr) * (1 - dc) * image[r0, c0] + (1 - dr) * dc * image[r0, c0 + 1]
                         + dr * (1 - dc) * image[r0 + 1, c0] + dr * dc * image[r0 + 1, c0 + 1])
    return out


def test_identity_initialisation_gives_the_downsampled_whole_canvas():
    torch.manual_seed(0)
    pair = build_rnn_spn({"downsample": 3.0, **TINY_RNN}, INFO)
    x = canvases()
    with torch.no_grad():
        theta, g = pair.glimpses(x)
    assert theta.shape == (2, 3, 2, 3) and g.shape == (2, 3, 33, 33)
    torch.testing.assert_close(theta, identity_affine(1).expand(2, 3, 2, 3))
    for b in range(2):
        expected = bilinear_by_hand(x[b].numpy().astype(np.float64), 33)
        np.testing.assert_allclose(g[b, 0].numpy(), expected, atol=1e-5)
        for t in (1, 2):  # every step starts from the same whole-canvas glimpse
            torch.testing.assert_close(g[b, t], g[b, 0])


def test_identity_glimpse_with_factor_two_is_a_two_by_two_average():
    torch.manual_seed(0)
    x = canvases()
    for pair in (build_ffn_spn({"downsample": 2.0, **TINY_FFN}, INFO),
                 build_rnn_spn({"downsample": 2.0, **TINY_RNN}, INFO),
                 build_cnn({"downsample": 2.0, **TINY_CNN}, INFO)):
        _, g = pair.glimpses(x)
        expected = x.reshape(2, 50, 2, 50, 2).mean(dim=(2, 4))
        torch.testing.assert_close(g[:, 0], expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("factor,size", [(1, 100), (2, 50), (3, 33), (4, 25)])
def test_downsampling_factor_sets_the_glimpse_size(factor, size):
    assert glimpse_size(100, factor) == size
    torch.manual_seed(0)
    pair = build_rnn_spn({"downsample": float(factor), **TINY_RNN}, INFO)
    theta, g = pair.glimpses(canvases(1))
    assert g.shape == (1, 3, size, size)
    assert pair.classify(canvases(1)).shape == (1, 3, 10)


def test_glimpse_corners_of_the_identity_are_the_canvas_edges():
    corners = glimpse_corners(identity_affine(1), 100, 100)[0]
    expected = torch.tensor([[-0.5, -0.5], [99.5, -0.5], [99.5, 99.5], [-0.5, 99.5]])
    torch.testing.assert_close(corners, expected)
    half = identity_affine(1) * torch.tensor([[0.5, 1.0, 1.0], [1.0, 0.5, 1.0]])
    half[0, 0, 2] = 0.5  # a zoom onto the right half, horizontally
    c = glimpse_corners(half, 100, 100)[0]
    torch.testing.assert_close(c[:, 0], torch.tensor([49.5, 99.5, 99.5, 49.5]))


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")
@pytest.mark.parametrize("build,hparams", [(build_rnn_spn, TINY_RNN), (build_ffn_spn, TINY_FFN),
                                           (build_cnn, TINY_CNN)])
def test_loss_is_the_mean_cross_entropy_over_digits(build, hparams):
    torch.manual_seed(1)
    pair = build(hparams, INFO)
    with torch.no_grad():  # move the transformers off the identity so that the glimpses differ
        for name, p in pair.named_parameters():
            if "affine" in name:
                p.add_(0.05 * torch.randn_like(p))
    x = canvases(4, seed=2)
    y = torch.randint(0, 10, (4, 3), generator=torch.Generator().manual_seed(3))
    logits = pair.p.net(x)
    assert logits.shape == (4, 3, 10)
    by_hand = -(logits.log_softmax(-1).gather(-1, y.unsqueeze(-1))).mean()
    torch.testing.assert_close(by_hand, F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1)))
    elbo = Trace_ELBO(max_plate_nesting=pair.max_plate_nesting)
    loss = elbo.differentiable_loss(pair.model, pair.guide, x, y) / y.numel()
    torch.testing.assert_close(loss, by_hand)
    for elbo in (Trace_ELBO(max_plate_nesting=2), TraceEnum_ELBO(max_plate_nesting=2)):
        loss, stats = supervised_loss(pair, elbo, x, y)
        torch.testing.assert_close(loss, by_hand)
    # the gradients agree too
    grads = torch.autograd.grad(loss, list(pair.parameters()))
    grads_hand = torch.autograd.grad(by_hand, list(pair.parameters()))
    for a, b in zip(grads, grads_hand, strict=True):
        torch.testing.assert_close(a, b)


def test_model_sites_and_plates():
    torch.manual_seed(0)
    pair = build_rnn_spn(TINY_RNN, INFO)
    x, y = canvases(2), torch.tensor([[1, 2, 3], [4, 5, 6]])
    trace = poutine.trace(pair.model).get_trace(x, y)
    site = trace.nodes["y"]
    assert site["is_observed"] and site["fn"].batch_shape == (2, 3)
    assert {f.name: f.dim for f in site["cond_indep_stack"]} == {"data": -2, "positions": -1}
    assert poutine.trace(pair.guide).get_trace(x, y).stochastic_nodes == []
    assert pair.max_plate_nesting == 2
    # without labels the model samples them
    sampled = pair.model(x)
    assert sampled.shape == (2, 3)
    probs = pair.classify(x)
    assert probs.shape == (2, 3, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3))


def test_flat_and_channel_inputs_agree():
    torch.manual_seed(0)
    pair = build_rnn_spn(TINY_RNN, INFO)
    x = canvases(2)
    a = pair.classify(x)
    torch.testing.assert_close(pair.classify(x.reshape(2, -1)), a)
    torch.testing.assert_close(pair.classify(x.unsqueeze(1)), a)


def test_sequence_errors_by_hand():
    probs = F.one_hot(torch.tensor([[1, 2, 3], [4, 5, 6]]), 10).float()
    y = torch.tensor([[1, 2, 3], [4, 0, 6]])
    errors = sequence_errors(probs, y)
    assert errors == {"digit_error": pytest.approx(1 / 6), "sequence_error": pytest.approx(0.5)}


def test_registered_with_the_papers_optimiser():
    for name, build in (("rnn-spn", build_rnn_spn), ("ffn-spn", build_ffn_spn),
                        ("cnn-seq", build_cnn)):
        spec = registry.get(name)
        assert spec.task == "supervised" and spec.builder() is build
        assert spec.train["optimizer"] == "rmsprop" and spec.train["lr"] == 5e-4
        assert spec.train["batch_size"] == 100 and spec.train["clip_norm"] > 0
        assert spec.train["dataset"] == "mnist-sequence"
    assert registry.get("rnn-spn").hparams["downsample"] == 3.0
    assert registry.get("ffn-spn").hparams["downsample"] == 2.0
    # the registered defaults are the paper's sizes: glimpses of 33 x 33 and 50 x 50
    full = build_rnn_spn(registry.get("rnn-spn").hparams, INFO)
    assert full.p.net.size == 33 and full.p.net.rnn.hidden_size == 256
    assert build_ffn_spn(registry.get("ffn-spn").hparams, INFO).p.net.size == 50


def test_plot_glimpses_writes_a_png(tmp_path):
    from ppl_dgm.plots import plot_glimpses

    torch.manual_seed(0)
    for build, hparams in ((build_rnn_spn, TINY_RNN), (build_ffn_spn, TINY_FFN)):
        pair = build(hparams, INFO)
        path = tmp_path / f"{build.__name__}.png"
        plot_glimpses(pair, canvases(3), np.array([[1, 2, 3]] * 3), path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build_ffn_spn.png", "build_rnn_spn.png"]


@pytest.mark.skipif(mnist_dir() is None, reason="the shared MNIST file is not next to the repo")
def test_cli_trains_and_evaluates_rnn_spn(tmp_path, monkeypatch, capsys):
    from ppl_dgm.cli import main

    monkeypatch.setenv("PPL_DGM_DATA", str(mnist_dir()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    sets = [a for k, v in TINY_RNN.items() for a in ("--set", f"{k}={v}")]
    code = main(["train", "rnn-spn", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size",
                 "20", "--device", "cpu", "--no-progress", "--out", str(out),
                 "--data-option", "n_train=100", "--data-option", "n_test=30", *sets])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["config"]["optimizer"] == "rmsprop"
    assert 0.0 <= summary["test_error"] <= 1.0
    assert 0.0 <= summary["test_sequence_error"] <= 1.0
    assert summary["test_sequence_error"] >= summary["test_error"]
    assert main(["evaluate", str(out), "--device", "cpu"]) == 0
    assert "test_sequence_error" in capsys.readouterr().out
    # continued with evaluation in smaller batches (30 test canvases: four of 7 and one of 2)
    assert main(["train", "rnn-spn", "--resume", "--epochs", "2", "--eval-batch-size", "7",
                 "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["config"]["eval_batch_size"] == 7
    assert summary["config"]["hparams"]["rnn_units"] == TINY_RNN["rnn_units"]
