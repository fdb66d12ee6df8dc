"""A label-noise M2: the guide enumerates a latent true class t for every point; the model observes
the given label through p(y | t) (a fixed 10% flip). No site "y" in the guide."""
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from ppl_dgm.pair import Pair
from ppl_dgm.registry import model_spec


def _cat(a, b):
    """Concatenate the last dimensions of a and b, broadcasting the others (t enumerated: (K, 1))."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, -1), b.expand(*shape, -1)], -1)


class Model(nn.Module):
    def __init__(self, x_dim, k, z_dim, hidden):
        super().__init__()
        self.n_classes, self.z_dim = k, z_dim
        self.decoder = nn.Sequential(nn.Linear(z_dim + k, hidden), nn.Softplus(),
                                     nn.Linear(hidden, x_dim))
        noise = torch.full((k, k), 0.1 / (k - 1))
        noise.fill_diagonal_(0.9)
        self.register_buffer("noise", noise)

    def forward(self, x, y=None, *, beta=1.0):
        with pyro.plate("data", x.shape[0]):
            t = pyro.sample("t", dist.Categorical(logits=x.new_zeros(self.n_classes)))
            with poutine.scale(scale=beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            if y is not None:
                pyro.sample("y", dist.Categorical(probs=self.noise[t]), obs=y)
            logits = self.decoder(_cat(z, F.one_hot(t, self.n_classes).to(x.dtype)))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def sample_x(self, n, y=None):
        t = y if y is not None else torch.randint(self.n_classes, (n,))
        z = torch.randn(n, self.z_dim)
        return torch.sigmoid(self.decoder(torch.cat([z, F.one_hot(t, self.n_classes).float()], -1)))


class Guide(nn.Module):
    def __init__(self, x_dim, k, z_dim, hidden):
        super().__init__()
        self.n_classes = k
        self.classifier = nn.Sequential(nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, k))
        self.encoder = nn.Linear(x_dim + k, 2 * z_dim)

    def forward(self, x, y=None, *, beta=1.0):
        with pyro.plate("data", x.shape[0]):
            t = pyro.sample("t", dist.Categorical(logits=self.classifier(x)),
                            infer={"enumerate": "parallel"})
            loc, scale = self.encoder(_cat(x, F.one_hot(t, self.n_classes).to(x.dtype))).chunk(2, -1)
            with poutine.scale(scale=beta):
                pyro.sample("z", dist.Normal(loc, F.softplus(scale) + 1e-3).to_event(1))

    def classify(self, x, num_samples=1):
        return torch.softmax(self.classifier(x), -1)


@model_spec(task="semi-supervised", hparams={"z_dim": 4, "hidden": 16}, train={"lr": 1e-3})
def build(hparams, data):
    args = (data.x_dim, data.n_classes, hparams["z_dim"], hparams["hidden"])
    return Pair(Model(*args), Guide(*args))
