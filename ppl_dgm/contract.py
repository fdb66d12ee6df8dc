"""The model/guide pair contract: what ``p``, ``q`` and ``build`` must provide, checked before training.

Where a pair comes from
-----------------------
``ppl-dgm train NAME`` takes a registered name (``ppl-dgm models``), ``path/to/my_pair.py:build``,
``mypackage.module:build``, or a name that an installed package registers in the entry point group
``ppl_dgm.models`` (``[project.entry-points."ppl_dgm.models"] mine = "mypackage.module:build"`` in its
``pyproject.toml``; the entry point names a build function or a :class:`~ppl_dgm.registry.ModelSpec`).
The Python API takes the same strings (``TrainConfig(model=...)`` through
:func:`ppl_dgm.config.resolve` and :func:`ppl_dgm.registry.resolve_spec`). The run directory's
``config.json`` records the pair's ``source`` (the file's absolute path and sha256, the module, or
the entry point), so ``evaluate``, ``sample`` and ``--resume`` load the same pair again; they stop
with a one-line error when it is gone and warn when the file changed.

``build``
---------
``build(hparams: dict, data: DataInfo) -> Pair`` (Pyro) or ``-> NumPyroPair`` (NumPyro). ``hparams``
are the declared defaults merged with ``--set KEY=VALUE`` (plus ``alpha`` for semi-supervised
pairs, ``num_particles`` for NumPyro ones); ``data`` (:class:`ppl_dgm.training.common.DataInfo`) gives
``x_dim``, ``image_shape``, ``n_classes``, ``n_train``, ``n_labelled``, ``n_unlabelled``. The task
and the defaults are declared on the function::

    @model_spec(task="semi-supervised", hparams={"z_dim": 16}, train={"lr": 1e-3, "epochs": 50})
    def build(hparams, data): ...

``task`` is ``"unsupervised"`` (x only), ``"semi-supervised"`` (x, and a label y for a few points)
or ``"supervised"`` (x and y always); ``train`` overrides :class:`ppl_dgm.config.TrainConfig`'s
defaults; ``backend="numpyro"`` for NumPyro pairs. ``ppl-dgm models path/to/my_pair.py:build``
prints the effective hyperparameters and training defaults.

The Pyro pair: ``ppl_dgm.pair.Pair(p, q, max_plate_nesting=1)``
-------------------------------------------------------------
* ``p`` (the model) and ``q`` (the guide) are ``torch.nn.Module``\\ s whose
  ``forward(x, y=None, *, beta=1.0)`` is a Pyro program. Their networks are submodules: the trainer
  optimises ``pair.parameters()`` (``pyro.param`` outside them is not trained and is refused).
* ``x`` is a batch: ``(B, x_dim)`` binarised for unsupervised and semi-supervised tasks, the images
  as they are for supervised ones; the data sit in a ``pyro.plate`` over the batch, and
  ``max_plate_nesting`` counts the plates (1 unless the programs nest plates).
* Every latent sample site of ``q`` is sampled by ``p`` under the same name, and the reverse; ``p``
  observes ``x`` (``obs=x``). ``beta`` scales the latent sites (``poutine.scale``): KL warm-up.
* Semi-supervised: the label site is ``"y"``. With ``y`` given, ``p`` observes it (``obs=y``) and
  ``q`` does not sample it (it may add ``alpha * log q(y|x)`` as a factor, as
  :func:`ppl_dgm.guides.label.label_site` does); with ``y=None``, ``q`` samples ``"y"`` from a
  distribution with finite support (``Categorical``) with ``infer={"enumerate": "parallel"}`` and
  ``p`` accepts the enumerated values (shape ``(K, 1)`` broadcast against the batch), so that
  ``TraceEnum_ELBO`` sums over the labels exactly.
* ... or the label is observed only in the model: ``q`` samples no ``"y"`` but enumerates exactly
  one latent class site (e.g. ``"t"``, the true class of a label-noise M2, enumerated for every
  point, labelled or not), and ``p`` observes ``y`` through ``p(y | t)`` when it is given (and
  need not sample it when ``y=None``: it sums to one). ``classify`` then gives ``q(t | x)``, which
  the test error compares with the labels (:func:`check_label_site`).
* ``q.classify(x, num_samples=1)`` -> class probabilities ``(B, n_classes)`` (``(B, T, n_classes)``
  for sequences): required by semi-supervised and supervised pairs (the test error); a subclass of
  ``Pair`` may define ``classify`` (and ``sample_x``) itself instead.
* Optional ``p.sample_x(n, y=None)`` -> Bernoulli means ``(n, x_dim)``: used by ``ppl-dgm sample``
  (one row per class when ``y`` is given) and the prior samples written after training.

The NumPyro pair: ``ppl_dgm.numpyro_pair.NumPyroPair(model, guide, ...)``
------------------------------------------------------------------------
The same sites, as functions ``model(x, y=None, *, beta=1.0, train=True)`` and ``guide(...)``
(``train=False`` at evaluation, for batch norm) with their networks registered in the programs
(``ppl_dgm.nn.flax_blocks.network``); ``classifier=(params, x) -> (B, n_classes)`` (required by
semi-supervised and supervised pairs) and ``sampler=(params, rng_key, n, y) -> (n, x_dim)``
(optional) take the parameters explicitly.

What works without the optional parts
-------------------------------------
A pair without a classifier declares ``task="unsupervised"``: it trains and is evaluated on its
likelihood (ELBO, IW log-likelihood with Pareto-k), with no test error. A pair that cannot sample
trains and evaluates; ``train`` warns before the first step that it cannot sample, and ``ppl-dgm
sample`` refuses it with a one-line error.

The checks
----------
When the trainer builds the pair, before any training step (the Pyro trainer also when it loads a
run), it checks the contract on four training points: the type ``build`` returned, the programs'
signatures, the sites of a trace of the guide and of the model replayed on it (guide sites missing
from the model, model sites missing from the guide, an observed site the guide samples, the label
site and its enumeration), the classifier's and the sampler's output shapes, and for Pyro pairs
one ELBO evaluation (finite, and differentiable in the pair's parameters) and no ``pyro.param``
outside the modules. Each failure is one :class:`ContractError` line naming the fix
(:func:`check_pyro_pair`, :func:`check_numpyro_pair`). Errors raised inside a pair's own code
are shown by the CLI as one line naming the file and line where they arose; ``ppl-dgm --debug``
(or ``PPL_DGM_DEBUG=1``) shows the whole traceback.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ppl_dgm.errors import UserError


class ContractError(UserError):
    """A model/guide pair does not meet the contract (one line naming the fix)."""


class PairWarning(UserWarning):
    """Something about a pair that a run can go on with (a changed source file, say)."""


class CannotSampleWarning(PairWarning):
    """The pair has no ``sample_x`` (sampler): ``ppl-dgm sample`` will refuse its runs."""


def label(spec: Any) -> str:
    """How messages name a pair: its reference for pairs from outside the library, else its name."""
    source = getattr(spec, "source", None) or {}
    return source.get("reference") or source.get("name") or spec.name


def _error(spec: Any, message: str) -> ContractError:
    return ContractError(f"{label(spec)}: {message}")


def check_signature(fn: Callable[..., Any], owner: str, spec: Any, *args: Any, **kwargs: Any) -> None:
    """``fn`` accepts ``(*args, **kwargs)`` (the way the trainer calls it)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and C functions: nothing to check
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        keywords = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        shown = ", ".join(["x", "y=None"][:len(args)] + [keywords])
        raise _error(spec, f"{owner}{signature} cannot be called as {owner}({shown}) ({err}); "
                           f"define it as (x, y=None, *, {keywords})") from None


def check_built(pair: Any, spec: Any) -> None:
    """``build`` returned the pair type of the spec's backend."""
    if spec.backend == "numpyro":
        from ppl_dgm.numpyro_pair import NumPyroPair

        expected, fix = NumPyroPair, "ppl_dgm.numpyro_pair.NumPyroPair(model, guide)"
    else:
        from ppl_dgm.pair import Pair

        expected, fix = Pair, "ppl_dgm.pair.Pair(p, q)"
    if not isinstance(pair, expected):
        raise _error(spec, f"build returned {type(pair).__name__}, not a {expected.__name__}: "
                           f"return {fix}")
    nesting = pair.max_plate_nesting
    if not isinstance(nesting, int) or isinstance(nesting, bool) or nesting < 1:
        raise _error(spec, f"max_plate_nesting is {nesting!r}: give the number of nested plates "
                           "(an int >= 1; 1 for a plate over the data)")


def _site_sets(trace_nodes: dict[str, dict[str, Any]]) -> tuple[set[str], set[str]]:
    """(latent sample sites, observed sample sites) of a trace's nodes."""
    latent, observed = set(), set()
    for name, site in trace_nodes.items():
        if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
            continue
        if site.get("is_observed"):
            observed.add(name)
        elif not site["infer"].get("is_auxiliary"):
            latent.add(name)
    return latent, observed


def check_sites(spec: Any, run: str, model_nodes: dict[str, dict[str, Any]],
                guide_nodes: dict[str, dict[str, Any]], labelled: bool | None) -> None:
    """The site rules of the contract on one model trace and one guide trace (either backend).

    ``labelled``: ``True`` for a run with ``y`` given, ``False`` for ``y=None`` of a semi-supervised
    pair, ``None`` when the task has no label to enumerate.
    """
    guide_latent, _ = _site_sets(guide_nodes)
    model_latent, model_observed = _site_sets(model_nodes)
    missing = sorted(guide_latent - model_latent - model_observed)
    if missing:
        raise _error(spec, f"guide site(s) {missing} are not in the model ({run}): the model must "
                           "sample each latent site of the guide under the same name")
    clash = sorted(guide_latent & model_observed)
    if clash:
        raise _error(spec, f"site(s) {clash} are observed in the model but sampled by the guide "
                           f"({run}): the guide must not sample an observed site")
    enumerated_in_model = {n for n in model_latent
                           if model_nodes[n]["infer"].get("enumerate") == "parallel"}
    unguided = sorted(model_latent - guide_latent - enumerated_in_model)
    if unguided:
        raise _error(spec, f"model site(s) {unguided} have no site in the guide ({run}): the guide "
                           "must sample each latent site of the model under the same name")
    if not model_observed:
        raise _error(spec, f"the model observes nothing ({run}): sample x with obs=x")
    if labelled is True and "y" not in model_observed:
        raise _error(spec, "the model does not observe the label when y is given: sample it as "
                           "pyro.sample(\"y\", ..., obs=y)")


def class_sites(guide_nodes: dict[str, dict[str, Any]]) -> list[str]:
    """The guide's latent sites other than ``"y"`` that are enumerated in parallel over a finite
    support: the candidates for a latent class of a pair that observes its label only in the model
    (see :func:`check_label_site`)."""
    return [name for name, site in guide_nodes.items()
            if name != "y" and site["type"] == "sample" and not site.get("is_observed")
            and site["infer"].get("enumerate") == "parallel"
            and getattr(site["fn"], "has_enumerate_support", False)]


def check_label_site(spec: Any, guide_nodes: dict[str, dict[str, Any]]) -> str:
    """The guide of a semi-supervised pair, run with ``y=None``: returns the site of its class.

    The rule: either the guide samples ``"y"`` itself, enumerated over a finite support (M2: the
    label is the class), or -- a pair whose label is observed only in the model, e.g. a label-noise
    M2 with a latent true class ``t`` that the guide enumerates for every point, labelled or not,
    and ``p(y | t)`` observing the given label -- the guide samples no ``"y"`` and enumerates
    exactly one other finite site (``"t"``). Both objectives are valid ELBOs, summed exactly over
    the enumerated class. In the second case the classifier (``classify``) must give ``q(t | x)``,
    and the test error compares its argmax with the labels, i.e. it takes ``t`` for the true class
    (a label-noise model whose ``p(y | t)`` permutes the classes would need its own classify).
    Anything else is refused: no ``"y"`` and no enumerated site, or several candidates.
    """
    site = guide_nodes.get("y")
    if site is None or site["type"] != "sample":
        candidates = class_sites(guide_nodes)
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise _error(spec, f"the guide samples no label site \"y\" when y is None and "
                               f"enumerates several sites {candidates}: sample the label as \"y\", "
                               "or enumerate one class site only")
        raise _error(spec, "the guide samples no label site \"y\" when y is None: sample it "
                           "from q(y|x) with infer={\"enumerate\": \"parallel\"} "
                           "(ppl_dgm.guides.label.label_site), or enumerate a latent class (e.g. "
                           "\"t\") whose label the model observes (see ppl_dgm/contract.py)")
    if not getattr(site["fn"], "has_enumerate_support", False):
        raise _error(spec, f"the guide's label site \"y\" cannot be enumerated: "
                           f"{type(site['fn']).__name__} has no finite support; use a "
                           "Categorical q(y|x)")
    if site["infer"].get("enumerate") != "parallel":
        raise _error(spec, "the guide's label site \"y\" is not marked for enumeration: add "
                           "infer={\"enumerate\": \"parallel\"} to its pyro.sample")
    return "y"


def check_outputs(spec: Any, probs_shape: tuple[int, ...] | None, y_shape: tuple[int, ...],
                  n_classes: int, sample_shape: tuple[int, ...] | None, n: int, x_dim: int) -> None:
    """The classifier's and the sampler's output shapes (either backend)."""
    if probs_shape is not None and tuple(probs_shape) != (*y_shape, n_classes):
        raise _error(spec, f"the classifier gave shape {tuple(probs_shape)} for {y_shape[0]} points: "
                           f"it must give class probabilities of shape {(*y_shape, n_classes)}")
    if sample_shape is not None and (len(sample_shape) < 1 or sample_shape[0] != n
                                     or _prod(sample_shape[1:]) != x_dim):
        raise _error(spec, f"sample_x({n}) gave shape {tuple(sample_shape)}: it must give Bernoulli "
                           f"means of shape ({n}, {x_dim})")


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _wrap(spec: Any, what: str, err: Exception) -> ContractError:
    first = (str(err).strip().splitlines() or [""])[0]  # Pyro appends the trace's shapes below
    wrapped = _error(spec, f"{what} failed: {type(err).__name__}: {first}".rstrip())
    wrapped.__cause__ = err
    return wrapped


def warn_cannot_sample(spec: Any, fix: str) -> None:
    import warnings

    warnings.warn(f"{label(spec)} cannot sample: `ppl-dgm sample` will refuse this run ({fix})",
                  CannotSampleWarning, stacklevel=3)


# ------------------------------------------------------------------------------------- Pyro
def check_pyro_pair(pair: Any, spec: Any, x: Any, y: Any, n_classes: int, task: str | None = None,
                    elbo: Any = None) -> None:
    """Check a built Pyro pair on a small batch ``x`` (as the trainer feeds it) with labels ``y``.

    Runs the guide and the model (traced) and ``elbo`` (default ``TraceEnum_ELBO``) once per kind
    of batch ``task`` (default the spec's) trains on, the classifier and the sampler; restores the
    RNG states and the buffers (batch-norm statistics) it touched. Raises :class:`ContractError`;
    warns (:class:`PairWarning`) when the pair cannot sample.
    """
    import warnings

    import pyro
    import pyro.util
    import torch
    from pyro import poutine

    task = task or spec.task
    if elbo is None:
        elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=pair.max_plate_nesting)
    for role, owner in (("p", "the model p"), ("q", "the guide q")):
        module = getattr(pair, role)
        if not isinstance(module, torch.nn.Module):
            raise _error(spec, f"{owner} is a {type(module).__name__}: make it a torch.nn.Module "
                               "whose forward(x, y=None, *, beta=1.0) is the Pyro program")
        check_signature(module.forward, f"{type(module).__name__}.forward", spec, x, None, beta=1.0)
    if not any(True for _ in pair.parameters()):
        raise _error(spec, "the pair has no parameters: make the networks attributes (submodules) "
                           "of p and q")
    from ppl_dgm.pair import Pair

    classifies = task in ("semi-supervised", "supervised")
    own_classify = type(pair).classify is not Pair.classify  # a Pair subclass may classify itself
    if classifies and not own_classify and not callable(getattr(pair.q, "classify", None)):
        raise _error(spec, f"{task} pairs need a classifier: add classify(x, num_samples=1) -> class "
                           f"probabilities (B, n_classes) to the guide {type(pair.q).__name__}")
    runs = {"semi-supervised": [("labelled", y, True), ("unlabelled", None, False)],
            "unsupervised": [("unlabelled", None, None)],
            "supervised": [("labelled", y, None)]}[task]
    own = {id(t) for t in pair.parameters()}
    rng = pyro.util.get_rng_state()
    buffers = {name: b.detach().clone() for name, b in pair.named_buffers()}
    try:
        for run, yy, labelled in runs:
            where = f"a {run} batch of {len(x)}"
            enum = poutine.enum(first_available_dim=-1 - pair.max_plate_nesting)
            try:
                guide_tr = poutine.trace(enum(pair.guide)).get_trace(x, yy, beta=1.0)
            except Exception as err:
                raise _wrap(spec, f"the guide on {where}", err) from err
            if labelled is False:
                check_label_site(spec, guide_tr.nodes)
            try:
                model_tr = poutine.trace(poutine.replay(pair.model, trace=guide_tr)).get_trace(
                    x, yy, beta=1.0)
            except Exception as err:
                raise _wrap(spec, f"the model on {where}" +
                            (" (y enumerated by the guide)" if labelled is False else ""), err) from err
            for tr, owner in ((guide_tr, "guide"), (model_tr, "model")):
                for name, site in tr.nodes.items():
                    if site["type"] == "param" and id(site["value"].unconstrained()
                                                     if hasattr(site["value"], "unconstrained")
                                                     else site["value"]) not in own:
                        raise _error(spec, f"the {owner} creates pyro.param({name!r}), which the "
                                           "trainer does not optimise: make it an nn.Parameter of "
                                           "p or q")
            check_sites(spec, where, model_tr.nodes, guide_tr.nodes, labelled)
            try:
                # enable_grad: the check holds whatever the caller's grad mode (e.g. under no_grad)
                with warnings.catch_warnings(), torch.enable_grad():
                    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
                    loss = elbo.differentiable_loss(pair.model, pair.guide, x, yy, beta=1.0)
            except Exception as err:
                raise _wrap(spec, f"the ELBO on {where}", err) from err
            if not torch.isfinite(loss):
                raise _error(spec, f"the ELBO on {where} is {loss.item()}: check the distributions' "
                                   "parameters (scales > 0, probabilities in [0, 1])")
            if not loss.requires_grad:
                raise _error(spec, f"the ELBO on {where} does not depend on the pair's parameters: "
                                   "compute the sites' distributions with p's and q's networks")
        with torch.no_grad():
            probs_shape = None
            if classifies:
                try:
                    probs_shape = tuple(pair.classify(x, num_samples=1).shape)
                except Exception as err:
                    raise _wrap(spec, "q.classify(x, num_samples=1)", err) from err
            sample_shape = None
            if task != "supervised":
                if (type(pair).sample_x is Pair.sample_x
                        and not callable(getattr(pair.p, "sample_x", None))):
                    warn_cannot_sample(spec, f"add sample_x(n, y=None) -> (n, x_dim) Bernoulli means "
                                             f"to the model {type(pair.p).__name__}")
                else:
                    try:
                        sample_shape = tuple(pair.sample_x(
                            2, y[:2] if task == "semi-supervised" else None).shape)
                    except Exception as err:
                        raise _wrap(spec, "p.sample_x(2, y)", err) from err
        check_outputs(spec, probs_shape, tuple(y.shape), n_classes, sample_shape, 2,
                      int(x[0].numel()))
    finally:
        pyro.util.set_rng_state(rng)
        with torch.no_grad():
            for name, b in pair.named_buffers():
                b.copy_(buffers[name])


# ------------------------------------------------------------------------------------- NumPyro
def check_numpyro_pair(pair: Any, spec: Any, x: Any, y: Any, n_classes: int, rng_key: Any,
                       task: str | None = None) -> None:
    """Check a built NumPyro pair on a small batch ``x`` with labels ``y`` (traces, not compiled):
    the programs' signatures and sites, the classifier and the sampler."""
    import jax
    from numpyro import handlers

    task = task or spec.task
    for fn, owner in ((pair.model, "model"), (pair.guide, "guide")):
        if not callable(fn):
            raise _error(spec, f"the {owner} is a {type(fn).__name__}: give a NumPyro program "
                               f"{owner}(x, y=None, *, beta=1.0, train=True)")
        check_signature(fn, owner, spec, x, None, beta=1.0, train=True)
    classifies = task in ("semi-supervised", "supervised")
    if classifies and pair.classifier is None:
        raise _error(spec, f"{task} pairs need a classifier: pass NumPyroPair(..., classifier=fn) "
                           "with fn(params, x) -> class probabilities (B, n_classes)")
    runs = {"semi-supervised": [("labelled", y, True), ("unlabelled", None, False)],
            "unsupervised": [("unlabelled", None, None)],
            "supervised": [("labelled", y, None)]}[task]
    params: dict[str, Any] = {}
    for i, (run, yy, labelled) in enumerate(runs):
        where = f"a {run} batch of {len(x)}"
        key_g, key_m = jax.random.split(jax.random.fold_in(rng_key, i))
        try:
            guide_tr = handlers.trace(handlers.seed(pair.guide, key_g)).get_trace(x, yy, beta=1.0)
        except Exception as err:
            raise _wrap(spec, f"the guide on {where}", err) from err
        if labelled is False:
            check_label_site(spec, guide_tr)
        try:
            model_tr = handlers.trace(handlers.replay(handlers.seed(pair.model, key_m),
                                                      trace=guide_tr)).get_trace(x, yy, beta=1.0)
        except Exception as err:
            raise _wrap(spec, f"the model on {where}", err) from err
        check_sites(spec, where, model_tr, guide_tr, labelled)
        for tr in (guide_tr, model_tr):
            params.update({n: s["value"] for n, s in tr.items() if s["type"] in ("param", "mutable")})
    probs_shape = None
    if classifies:
        try:
            probs_shape = tuple(pair.classify(params, x, num_samples=1, rng_key=rng_key).shape)
        except Exception as err:
            raise _wrap(spec, "the classifier", err) from err
    sample_shape = None
    if task != "supervised":
        if pair.sampler is None:
            warn_cannot_sample(spec, "pass NumPyroPair(..., sampler=fn) with fn(params, rng_key, n, y) "
                                     "-> (n, x_dim) Bernoulli means")
        else:
            try:
                sample_shape = tuple(pair.sample_x(params, rng_key, 2,
                                                   y[:2] if task == "semi-supervised" else None).shape)
            except Exception as err:
                raise _wrap(spec, "the sampler", err) from err
    check_outputs(spec, probs_shape, tuple(y.shape), n_classes, sample_shape, 2, int(x[0].size))


# ------------------------------------------------------------------------------------- error origin
# Frames of these packages (and of the standard library and ppl_dgm's own machinery) are not where a
# pair's error arose; ppl_dgm.models and ppl_dgm.guides are pairs' code and count.
_LIBRARIES = frozenset({
    "torch", "pyro", "jax", "jaxlib", "numpyro", "flax", "optax", "numpy", "funsor", "opt_einsum",
    "scipy", "xarray", "tqdm", "matplotlib", "sklearn", "arviz", "h5netcdf", "typing_extensions",
})


def _is_library(frame: Any) -> bool:
    import sysconfig

    name = frame.f_globals.get("__name__", "") or ""
    top = name.partition(".")[0]
    if top in _LIBRARIES or name == "__main__":
        return True
    if top == "ppl_dgm":
        return not name.startswith(("ppl_dgm.models", "ppl_dgm.guides"))
    filename = frame.f_code.co_filename
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return True
    stdlib = sysconfig.get_paths()["stdlib"]
    return filename.startswith(stdlib) and "site-packages" not in filename


def error_origin(err: BaseException) -> str | None:
    """``"path/to/file.py:LINE in FUNCTION"``: the innermost frame of ``err``'s traceback (or of the
    errors it was raised from) that is a pair's own code, not torch/Pyro/JAX/NumPyro, the standard
    library or ppl_dgm's machinery; ``None`` when there is none (a bad option, say)."""
    import os
    import traceback

    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    for exc in reversed(chain):  # the error the others were raised from first
        for frame, lineno in reversed(list(traceback.walk_tb(exc.__traceback__))):
            if not _is_library(frame):
                path = frame.f_code.co_filename
                try:
                    rel = os.path.relpath(path)
                    path = rel if not rel.startswith("..") else path
                except ValueError:
                    pass
                return f"{path}:{lineno} in {frame.f_code.co_name}"
    return None
