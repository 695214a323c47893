"""Every installed backend against ``backends.api``: each name of the ``Backend`` Protocol present, functions
and constructors with the contract's parameters (names, kinds, defaults; extra ones only after them and
with defaults), every class constructible from the contract's arguments, and weight files that any
backend (and NumPy) reads.

One parametrisation per backend, under its marker (nox runs each marker group in its own process, with
``KERAS_BACKEND`` set for Keras); a framework that is missing, or a Keras backend other than the one this
process runs, skips with the reason. The checker itself is tested on fake modules (no framework needed).
"""

from __future__ import annotations

import inspect
import itertools
import types
import typing

import numpy as np
import pytest

import backends
from backends import api
from backends.common import stack_shapes, under
from backends.spec import ModelConfig, TrainConfig, init_params
from backends.spec.config import MoUEConfig
from tests.conftest import backend_or_skip

BACKENDS = [
    pytest.param("torch", marks=pytest.mark.torch),
    pytest.param("keras-jax", marks=pytest.mark.keras_jax),
    pytest.param("keras-torch", marks=pytest.mark.keras_torch),
    pytest.param("mlx", marks=pytest.mark.mlx),
]
UNCHECKED_SIGNATURES = {"__call__"}  # the framework's (dispatching to forward / call)


# --- the checker ----------------------------------------------------------------------------------------


def protocol_members(proto: type) -> dict[str, object]:
    """The members ``proto`` declares: ``{name: type hint}`` for data, ``{name: function}`` for methods
    (static ones unwrapped, class methods bound to ``proto``; ``__init__`` is the constructor; other dunders
    but ``__call__`` left out)."""
    members: dict[str, object] = dict(typing.get_type_hints(proto))
    for name, value in vars(proto).items():
        if name.startswith("__") and name not in ("__init__", "__call__"):
            continue
        function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if inspect.isfunction(function) and function.__qualname__.startswith(f"{proto.__qualname__}."):  # not Protocol's own
            members[name] = value.__get__(None, proto) if isinstance(value, classmethod) else function
    return members


def _is_method(member) -> bool:
    return inspect.isfunction(member) or inspect.ismethod(member)


def signature_problems(where: str, actual, expected) -> list[str]:
    """How ``actual``'s signature departs from ``expected``'s: the contract's parameters first, in order,
    with the same names, kinds and defaults; then only parameters with defaults, ``*args`` or ``**kwargs``."""
    try:
        got = list(inspect.signature(actual).parameters.values())
    except (TypeError, ValueError) as exc:
        return [f"{where}: no signature ({exc})"]
    want = list(inspect.signature(expected).parameters.values())
    problems = []
    for i, w in enumerate(want):
        g = got[i] if i < len(got) else None
        if g is None or (g.name, g.kind, g.default) != (w.name, w.kind, w.default):
            problems.append(f"{where}: parameter {i} is {g or 'absent'}, the contract has {w}")
    for extra in got[len(want) :]:
        if extra.default is inspect.Parameter.empty and extra.kind not in (extra.VAR_POSITIONAL, extra.VAR_KEYWORD):
            problems.append(f"{where}: extra parameter {extra} has no default")
    return problems


def class_problems(where: str, cls, proto: type) -> list[str]:
    if not isinstance(cls, type):
        return [f"{where}: {cls!r} is not a class"]
    problems = []
    for name, member in protocol_members(proto).items():
        if not _is_method(member) or name in UNCHECKED_SIGNATURES:
            continue  # data members are checked on instances (isinstance)
        if name != "__init__" and not callable(getattr(cls, name, None)):
            problems.append(f"{where}.{name}: missing")
        else:
            problems += signature_problems(f"{where}.{name}", getattr(cls, name), member)
    return problems


def contract_problems(module) -> list[str]:
    """Everything in ``module`` that departs from ``api.Backend`` (empty: it conforms)."""
    problems = []
    for name, member in protocol_members(api.Backend).items():
        if not hasattr(module, name):
            problems.append(f"{name}: missing")
            continue
        value = getattr(module, name)
        if _is_method(member):
            problems += signature_problems(name, value, member) if callable(value) else [f"{name}: not callable"]
        elif typing.get_origin(member) is type:
            problems += class_problems(name, value, typing.get_args(member)[0])
        elif member is not typing.Any and not isinstance(value, member):
            problems.append(f"{name}: {value!r} is not a {member.__name__}")
    return problems


# --- tiny models of every kind ---------------------------------------------------------------------------

CONFIGS = {
    "dynamoe": ModelConfig(size="tiny"),
    "mlp": ModelConfig(size="tiny", kind="mlp"),
    "moue": ModelConfig(size="tiny", kind="moue", moue=MoUEConfig(pool_size=8, local_experts=1, trajectory_dim=4)),
}
PARAMS = {kind: init_params(cfg, 0) for kind, cfg in CONFIGS.items()}


def contract_arguments(bk) -> dict[str, tuple]:
    """The contract's required constructor arguments of every class ``api.Backend`` names."""
    d, mlp = CONFIGS["dynamoe"], CONFIGS["mlp"]
    return {
        "DynaMoE": (64, 8, 32),
        "FeedForward": (64, 128),
        "DynaMoEStack": (64, 2),
        "MoUEStack": (64, 2),
        "TransformerBlock": (64, 4),
        "DynaMoEModel": (d, PARAMS["dynamoe"]),
        "MLPModel": (mlp, PARAMS["mlp"]),
        "MoUEModel": (CONFIGS["moue"], PARAMS["moue"]),
        "Trainer": (bk.build_model(d, PARAMS["dynamoe"]), TrainConfig()),
    }


CLASS_MEMBERS = {name: typing.get_args(h)[0] for name, h in typing.get_type_hints(api.Backend).items() if typing.get_origin(h) is type}


@pytest.fixture(params=BACKENDS)
def bk(request):
    return backend_or_skip(request.param)


# --- every backend ---------------------------------------------------------------------------------------


def test_backend_follows_the_contract(bk):
    assert contract_problems(bk) == []
    assert isinstance(bk, api.Backend)
    assert bk.NAME in backends.BACKENDS and backends.load(bk.NAME) is bk


@pytest.mark.parametrize("name", sorted(CLASS_MEMBERS))
def test_classes_construct_from_the_contract_arguments(bk, name):
    instance = getattr(bk, name)(*contract_arguments(bk)[name])
    assert isinstance(instance, CLASS_MEMBERS[name])


def test_layers_and_models_run(bk, monkeypatch):
    """What the contract built runs: layers on tokens (N, d), every model kind through ``forward``."""
    monkeypatch.setenv("DYNAMOE_TORCH_DEVICE", "cpu")  # where PyTorch's layers are built unless told
    for kind, cfg in CONFIGS.items():
        model = getattr(bk, {"dynamoe": "DynaMoEModel", "mlp": "MLPModel", "moue": "MoUEModel"}[kind])(cfg, PARAMS[kind])
        logits, masks = bk.forward(model, np.zeros((3, cfg.input_dim)))
        assert logits.shape == (3, cfg.output_dim) and len(masks) == (0 if kind == "mlp" else cfg.num_layers)
        assert list(bk.export_params(model)) == list(PARAMS[kind])
    h = bk.to_tensor(bk.build_model(CONFIGS["mlp"], PARAMS["mlp"]), np.ones((5, CONFIGS["mlp"].hidden_dim)))
    d = CONFIGS["dynamoe"]
    y, routing = bk.DynaMoE.from_arrays(d.router, under(PARAMS["dynamoe"], "layers.0.")).forward_with_routing(h)
    assert tuple(y.shape) == (5, 64) and tuple(routing.mask.shape) == (5, d.experts_per_layer()[0])
    assert tuple(bk.FeedForward.from_arrays(under(PARAMS["mlp"], "layers.0."))(h).shape) == (5, 64)
    built = contract_arguments(bk)
    for name in ("DynaMoE", "FeedForward", "DynaMoEStack", "MoUEStack"):
        assert tuple(getattr(bk, name)(*built[name])(h).shape) == (5, 64), name
    for kind, cls in (("dynamoe", bk.DynaMoEStack), ("moue", bk.MoUEStack)):
        stack = cls.from_arrays(CONFIGS[kind], {k: PARAMS[kind][k] for k in stack_shapes(CONFIGS[kind])})
        out, routings = stack.forward_with_routing(h)
        assert tuple(out.shape) == (5, 64) and len(routings) == CONFIGS[kind].num_layers


def test_layer_constructors_refuse_wrong_names(bk):
    arrays = under(PARAMS["dynamoe"], "layers.0.")
    with pytest.raises(ValueError, match=r"missing \['experts.b2'\]"):
        bk.DynaMoE.from_arrays(CONFIGS["dynamoe"].router, {k: v for k, v in arrays.items() if k != "experts.b2"})
    with pytest.raises(ValueError, match=r"unexpected \['gate.weight'\]"):
        bk.FeedForward.from_arrays({**under(PARAMS["mlp"], "layers.0."), "gate.weight": arrays["gate.weight"]})
    with pytest.raises(ValueError, match=r"'experts.b2' has shape \(8, 3\), the layer needs \(8, 64\)"):
        bk.DynaMoE(64, 8, 32, arrays={**arrays, "experts.b2": np.zeros((8, 3))})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_files_are_spec_arrays_in_npz(bk, tmp_path, dtype):
    """``save_weights`` writes ``export_params`` as ``.npz`` (NumPy reads it); ``load_weights`` reads any
    such file (here one written by NumPy, as by another backend), checked against the model's config."""
    cfg = CONFIGS["moue"]
    model = bk.build_model(cfg, PARAMS["moue"], dtype)
    bk.save_weights(model, tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as saved:
        exported = bk.export_params(model)
        assert saved.files == list(exported) and all(np.array_equal(saved[k], v) and saved[k].dtype == v.dtype for k, v in exported.items())
    other = init_params(cfg, 1)
    np.savez(tmp_path / "other.npz", **other)
    loaded = bk.export_params(bk.load_weights(model, tmp_path / "other.npz"))
    assert all(loaded[k].dtype == np.dtype(dtype) and np.array_equal(loaded[k], other[k].astype(dtype)) for k in other)
    with pytest.raises(ValueError, match="missing"):
        bk.load_weights(bk.build_model(CONFIGS["mlp"], PARAMS["mlp"], dtype), tmp_path / "model.npz")
    with pytest.raises(ValueError, match=r"\.npz"):
        bk.save_weights(model, tmp_path / "model.pt")


@pytest.mark.parity
@pytest.mark.parametrize(("writer", "reader"), list(itertools.permutations(backends.BACKENDS, 2)))
def test_weights_move_between_backends(tmp_path, writer, reader):
    a, b = backend_or_skip(writer), backend_or_skip(reader)
    cfg = CONFIGS["dynamoe"]
    a.save_weights(a.build_model(cfg, init_params(cfg, 3), "float64"), tmp_path / "w.npz")
    loaded = b.export_params(b.load_weights(b.build_model(cfg, PARAMS["dynamoe"], "float64"), tmp_path / "w.npz"))
    assert all(np.array_equal(loaded[k], v) for k, v in init_params(cfg, 3).items())


# --- the checker finds departures ------------------------------------------------------------------------


def _stub(signature: inspect.Signature):
    def stub(*args, **kwargs):
        return None

    stub.__signature__ = signature
    return stub


def conforming_fake() -> types.ModuleType:
    """A module of stubs with exactly the contract's names and signatures."""
    fake = types.ModuleType("fake_backend")
    fake.NAME, fake.OPS = "fake", object()
    for name, member in protocol_members(api.Backend).items():
        if _is_method(member):
            setattr(fake, name, _stub(inspect.signature(member)))
        elif typing.get_origin(member) is type:
            setattr(fake, name, type(name, (typing.get_args(member)[0],), {}))
    return fake


def test_a_conforming_fake_passes():
    fake = conforming_fake()
    assert contract_problems(fake) == [] and isinstance(fake, api.Backend)


def test_a_missing_name_is_reported():
    fake = conforming_fake()
    del fake.save_weights
    assert contract_problems(fake) == ["save_weights: missing"]
    assert not isinstance(fake, api.Backend)


def test_wrong_signatures_are_reported():
    fake = conforming_fake()
    fake.forward = lambda model, x: None  # no noises
    fake.build_model = lambda cfg, params, dtype="float64": None
    fake.labels_tensor = lambda y: None
    fake.export_params = lambda model, device: None  # an extra parameter without a default
    fake.NAME = 3
    problems = contract_problems(fake)
    assert len(problems) == 6, problems  # labels_tensor: y for model, and no second parameter
    assert any(p.startswith("forward: parameter 2 is absent") for p in problems)
    assert any(p.startswith("build_model: parameter 2 is dtype='float64'") for p in problems)
    assert any(p.startswith("labels_tensor: parameter 0 is y") for p in problems)
    assert any(p.startswith("export_params: extra parameter device") for p in problems)
    assert "NAME: 3 is not a str" in problems


def test_extra_parameters_with_defaults_are_allowed():
    fake = conforming_fake()
    fake.build_model = lambda cfg, params, dtype="float32", device=None, **kwargs: None
    assert contract_problems(fake) == []


def test_wrong_classes_are_reported():
    fake = conforming_fake()

    class PositionalArraysLayer:  # an old constructor: spec arrays instead of sizes, no from_arrays
        router = None

        def __init__(self, router, gate, w1, b1, w2, b2, dtype="float32"):
            pass

        def forward_with_routing(self, h, noise=None):
            pass

    class NoStepTrainer:
        def __init__(self, model, cfg, compile=False):
            pass

        def optimizer_state(self):
            pass

        def load_optimizer_state(self, state):
            pass

    fake.DynaMoE, fake.Trainer, fake.MLPModel = PositionalArraysLayer, NoStepTrainer, "MLP"
    problems = contract_problems(fake)
    assert any(p.startswith("DynaMoE.__init__: parameter 1 is router") for p in problems), problems
    assert any(p.startswith("DynaMoE.__init__: parameter 4 is b1") for p in problems), problems
    assert "DynaMoE.from_arrays: missing" in problems, problems
    assert "Trainer.step: missing" in problems and "MLPModel: 'MLP' is not a class" in problems
