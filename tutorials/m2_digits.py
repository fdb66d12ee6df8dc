"""Tutorial: M2 on the bundled 8x8 digits, and two ways of handling the unobserved label.

Run it with ``python tutorials/m2_digits.py`` (about a minute on 2 CPU cores; ``--quick`` for a
smoke run). It shows

1. the M2 model/guide pair of the registry and what its traces contain;
2. the exact sum over y (``TraceEnum_ELBO`` with parallel enumeration) against sampling y
   (``Trace_ELBO``, a score-function estimator): both estimate the same bound, with very different
   variance;
3. training with the library's loop and reading the run's records.
"""

from __future__ import annotations

import argparse
import tempfile

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from ppl_dgm import registry, results
from ppl_dgm.config import resolve
from ppl_dgm.train.loop import Trainer


def main(quick: bool = False) -> dict:
    torch.manual_seed(0)
    # -- 1. the pair, trained briefly by the library's loop ---------------------------------------
    config = resolve(registry.get("m2"), {"dataset": "digits", "labels": 100, "seed": 0,
                                          "epochs": 3 if quick else 40, "device": "cpu"})
    run_dir = tempfile.mkdtemp(prefix="m2-digits-")
    trainer = Trainer(config, run_dir, progress=not quick)
    summary = trainer.fit()
    print(f"M2 after {summary['epochs']} epochs: test accuracy {1 - summary['test_error']:.3f}, "
          f"test ELBO {summary['test_elbo']:.2f} nats")
    history = results.read_history(f"{run_dir}/{results.HISTORY}")
    print("validation error by epoch:", history["validation_error"].values.round(3))

    # -- 2. what the guide does with an unlabelled batch ------------------------------------------
    pair = trainer.pair.eval()
    x = trainer.x_test_binary[:8]
    enum_trace = poutine.trace(poutine.enum(pair.guide, first_available_dim=-2)).get_trace(x)
    print("enumerated y has shape", tuple(enum_trace.nodes["y"]["value"].shape),
          "and z", tuple(enum_trace.nodes["z"]["value"].shape), "(one z per label and point)")

    # -- 3. the same bound, two estimators --------------------------------------------------------
    n = 20 if quick else 200
    estimates = {}
    for name, elbo in (("TraceEnum_ELBO (sum over y)", TraceEnum_ELBO(max_plate_nesting=1)),
                       ("Trace_ELBO (y sampled)", Trace_ELBO())):
        values = torch.tensor([-elbo.loss(pair.model, pair.guide, x, None) / len(x)
                               for _ in range(n)])
        estimates[name] = (values.mean().item(), values.std().item())
        print(f"{name:<28} ELBO {values.mean():8.2f} +- {values.std():.2f} (std over {n} runs)")
    pyro.clear_param_store()
    return {"summary": summary, "estimates": estimates}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few epochs only")
    main(parser.parse_args().quick)
