"""Training and evaluation in Keras: ``spec.optim.adamw_step`` as a Keras optimiser, one step through
Keras's stateless API (``model.stateless_call`` + ``optimizer.stateless_apply``), the learning rate
handed in each step from ``spec.optim.learning_rate``.

Keras has no backend-neutral gradient, so ``value_and_grad`` (and ``no_grad``) branch on the running
backend: ``jax.value_and_grad`` on JAX, ``torch.autograd.grad`` on PyTorch. So does ``Trainer``'s update:
on PyTorch (eager) it is the same AdamW formula in place on the variables' tensors
(``torch._fused_adamw_``, the kernel of the torch backend's ``torch.optim.AdamW(fused=True)``), not
``stateless_apply``'s dozen element-wise ops per variable and the copies assigning them back.
"""

from __future__ import annotations

import contextlib
import importlib
import platform
import warnings

import keras
import numpy as np
from keras import ops

from backends.spec import forward as F
from backends.spec.config import TrainConfig
from backends.spec.init import param_shapes
from backends.spec.losses import evaluation_sums, model_loss
from backends.spec.optim import adamw_step, bias_corrections, check_optimizer_state

from .layers import OPS, float_dtype
from .model import _Network, labels_tensor, noise_tensors, to_tensor


class SpecAdamW(keras.optimizers.Optimizer):
    """AdamW as ``spec.optim.adamw_step`` (``torch.optim.AdamW``'s formula), evaluated with ``KerasOps``.

    ``keras.optimizers.AdamW`` differs: it adds epsilon to ``sqrt(v)`` before the bias correction
    (``lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, i.e. an effective eps of
    ``eps / sqrt(1 - b2^t)``, 31x the spec's at step 1) and decays ``p - p wd lr``.
    The learning rate is an optimiser variable of the model's dtype (not Keras's float32 ``floatx``
    one): a new value each step is a new input of the compiled step, never a new constant.
    """

    def __init__(self, cfg: TrainConfig, dtype: str = "float32", name: str = "spec_adamw"):
        super().__init__(learning_rate=self._current_learning_rate, name=name)
        self.cfg = cfg
        self.learning_rate_variable = self.add_variable((), keras.initializers.Constant(cfg.lr), dtype=dtype, name="learning_rate")

    def _current_learning_rate(self):
        return self.learning_rate_variable

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._m, self._v = self.add_optimizer_variables(variables, ["m", "v"])

    def update_step(self, gradient, variable, learning_rate):
        # adamw_step uses Python's operators on the values (not keras.ops.multiply/power, whose result_type
        # would make a float64 update float32 on PyTorch, keras-team/keras#23704). Inside ``stateless_apply``
        # each ``.value`` is the value handed in.
        cfg, dtype, index = self.cfg, variable.dtype, self._get_variable_index(variable)
        lr, g = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        step = ops.cast(self.iterations.value + 1, dtype)
        m, v = self._m[index], self._v[index]
        param, m_new, v_new = adamw_step(OPS, variable.value, g, m.value, v.value, lr, bias_corrections(step, cfg), cfg)
        self.assign(m, m_new)
        self.assign(v, v_new)
        self.assign(variable, param)


def value_and_grad(fn):
    """``fn(params, *args) -> scalar`` to ``(value, [d value / d p for p in params])``."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.value_and_grad(fn)
    import torch

    def torch_value_and_grad(params, *args):
        leaves = [p.detach().requires_grad_(True) for p in params]
        with torch.enable_grad():
            value = fn(leaves, *args)
            grads = torch.autograd.grad(value, leaves, allow_unused=True)
        return value.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]

    return torch_value_and_grad


def no_grad():
    """A context recording no gradient graph (PyTorch's eager autograd; nothing to do on JAX)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def compile_fn(fn, **options):
    """``jax.jit(fn, **options)`` on JAX; on PyTorch ``fn`` itself (eager)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn, **options)
    return fn


def _evaluate(cfg, params: dict, x, noises):
    """Logits and per-layer masks of ``spec.forward.model_forward`` (``params``: ``_Network.params()``)."""
    logits, routings = F.model_forward(OPS, params, x, cfg, noises)
    return logits, [r.mask for r in routings]


def _evaluation_sums(cfg, params: dict, x, y):
    """Summed cross-entropy, correct predictions and per-layer masks (``spec.losses.evaluation_sums``)."""
    loss_sum, correct, routings = evaluation_sums(OPS, params, x, y, cfg)
    return loss_sum, correct, [r.mask for r in routings]


def _values(variables) -> list:
    return [v.value for v in variables]


# On JAX one compiled forward per config, batch shape and dtype: run op by op, each of its ~100 small ops
# is compiled on its first shape, which costs several times more than compiling the whole forward once.
_evaluate_compiled = compile_fn(_evaluate, static_argnums=0)
_evaluation_sums_compiled = compile_fn(_evaluation_sums, static_argnums=0)


def _loss_of(model: _Network):
    """The training loss (cross-entropy + ``balance_weight`` x balancing loss, ``spec.losses.training_loss``)
    as a function of the model's variable values (``stateless_call``)."""

    def loss(trainable, non_trainable, x, y, noises):
        # ``stateless_call``'s scope, around ``spec.losses.model_loss`` (a language model's head chunk by
        # chunk, never its full logits) instead of the model's ``call``
        mapping = [*zip(model.trainable_variables, trainable), *zip(model.non_trainable_variables, non_trainable)]
        with keras.StatelessScope(state_mapping=mapping):
            return model_loss(OPS, model.params(), x, y, model.cfg, noises)

    return loss


TORCH_COMPILE_NOTE = (
    "compile=True runs eagerly on keras-torch: torch.compile of the Keras step breaks the graph wherever "
    "Keras's torch convert_to_tensor meets a NumPy constant (Dynamo cannot trace "
    "ndarray.dtype), giving 22 graphs for a Tiny model, ~77 s of compilation on 2 CPU cores and a slower "
    "step than eager (25 vs 14 ms)"
)


class Trainer:
    """One AdamW step at a time: gradients, ``SpecAdamW.stateless_apply``, values written back (on
    PyTorch: gradients, then ``_torch_step``'s fused AdamW in place on the same variables).

    The step is a function of the variables' values (``model.stateless_call``), the batch, the noise and
    the learning rate; ``step`` reads the values from the variables and assigns the results back.
    ``compile=True`` on JAX compiles the whole step (forward, gradient, update) with ``jax.jit``, traced
    once per batch shape (``traces`` counts traces; eager: one per step); use it on JAX: eagerly, each of
    the step's hundreds of small ops is compiled on its first shape (Small: ~36 s for the first step on 2
    CPU cores, then ~0.3 s a step; compiled: ~7 s, then ~0.01 s a step). On PyTorch it runs eagerly (``compiled`` is
    False, a warning says why: ``TORCH_COMPILE_NOTE``).
    """

    def __init__(self, model: _Network, cfg: TrainConfig, compile: bool = False):
        self.model = model
        self.cfg = cfg
        self.optimizer = SpecAdamW(cfg, dtype=model.variable_dtype)
        self.optimizer.build(model.trainable_variables)
        self._lr_index = next(i for i, v in enumerate(self.optimizer.variables) if v is self.optimizer.learning_rate_variable)
        self._grad = value_and_grad(_loss_of(model))
        self.traces = 0
        self.compiled = bool(compile) and keras.backend.backend() == "jax"
        if compile and not self.compiled:
            warnings.warn(TORCH_COMPILE_NOTE, stacklevel=2)
        self._step = compile_fn(self._update) if self.compiled else self._update
        self._in_place = keras.backend.backend() == "torch"

    def _torch_step(self, x, y, noises, lr: float):
        """The step on PyTorch: the gradients of the variables' values, then AdamW in place on the
        variables' own tensors (parameters, ``m``, ``v``; the ``iterations`` counter +1)."""
        import torch

        model, opt = self.model, self.optimizer
        params = _values(model.trainable_variables)
        inputs = (to_tensor(model, x), labels_tensor(model, y), noise_tensors(model, noises))
        self.traces += 1
        loss, grads = self._grad(params, _values(model.non_trainable_variables), *inputs)
        # the fused kernel walks each tensor's memory in order: a gradient must have its parameter's layout
        # (``torch.autograd.grad`` may return another, e.g. through the concat dispatch's transpose)
        grads = [g if g.stride() == p.stride() else g.contiguous() for p, g in zip(params, grads)]
        index = [opt._get_variable_index(v) for v in model.trainable_variables]
        with torch.no_grad():
            iterations = opt.iterations.value
            iterations.add_(1)
            step = iterations.to(torch.float32)
            cfg = self.cfg
            torch._fused_adamw_(
                params, grads, [opt._m[i].value for i in index], [opt._v[i].value for i in index], [], [step] * len(params),
                amsgrad=False, lr=lr, beta1=cfg.beta1, beta2=cfg.beta2, weight_decay=cfg.weight_decay, eps=cfg.eps, maximize=False,
            )  # fmt: skip
            opt.learning_rate_variable.value.fill_(lr)
        return loss

    def _update(self, trainable, non_trainable, optimizer_values, x, y, noises):
        self.traces += 1
        loss, grads = self._grad(trainable, non_trainable, x, y, noises)
        with no_grad():
            trainable, optimizer_values = self.optimizer.stateless_apply(optimizer_values, grads, trainable)
        return loss, trainable, optimizer_values

    def step(self, x, y, noises, lr: float):
        """One optimiser step on batch (x, y) with per-layer gate noise; returns the loss (no host sync)."""
        if self._in_place:
            return self._torch_step(x, y, noises, lr)
        model, opt = self.model, self.optimizer
        values = _values(opt.variables)
        values[self._lr_index] = ops.convert_to_tensor(lr, dtype=opt.learning_rate_variable.dtype)
        inputs = (to_tensor(model, x), labels_tensor(model, y), noise_tensors(model, noises))
        loss, trainable, values = self._step(_values(model.trainable_variables), _values(model.non_trainable_variables), values, *inputs)
        for variable, value in zip(model.trainable_variables, trainable):
            variable.assign(value)
        for variable, value in zip(opt.variables, values):
            variable.assign(value)
        return loss

    def _moments(self) -> dict:
        """``{spec name: (m, v)}``: the optimiser variables of each parameter."""
        opt = self.optimizer
        indices = {name: opt._get_variable_index(v) for name, v in self.model.spec_variables().items()}
        return {name: (opt._m[i], opt._v[i]) for name, i in indices.items()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's state as NumPy under ``spec.optim.optimizer_state_names``."""
        out = {"steps": np.array(int(ops.convert_to_numpy(self.optimizer.iterations.value)), dtype=np.int64)}
        for name, (m, v) in self._moments().items():
            out[f"m.{name}"], out[f"v.{name}"] = np.array(ops.convert_to_numpy(m.value)), np.array(ops.convert_to_numpy(v.value))
        return out

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``optimizer_state()``'s arrays (checked against the model's parameters)."""
        check_optimizer_state(state, param_shapes(self.model.cfg))
        self.optimizer.iterations.assign(int(state["steps"]))
        for name, (m, v) in self._moments().items():
            m.assign(np.asarray(state[f"m.{name}"], dtype=m.dtype))
            v.assign(np.asarray(state[f"v.{name}"], dtype=v.dtype))


def to_float(value) -> float:
    return float(keras.ops.convert_to_numpy(value))


def forward(model: _Network, x, noises=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """NumPy logits and per-layer selected masks."""
    with no_grad():
        logits, masks = _evaluate_compiled(model.cfg, model.params(), to_tensor(model, x), noise_tensors(model, noises))
        return ops.convert_to_numpy(logits), [ops.convert_to_numpy(m) for m in masks]


def gradients(model: _Network, x, y, noises=None) -> tuple[float, dict[str, np.ndarray]]:
    """The training loss (mean cross-entropy, + ``balance_weight`` x the balancing loss when > 0) and its
    gradient with respect to every parameter (spec names, spec order)."""
    variables = model.trainable_variables
    # compiled on JAX (once per call: op by op, JAX's eager autodiff compiles each small op separately)
    inputs = (to_tensor(model, x), labels_tensor(model, y), noise_tensors(model, noises))
    loss, grads = compile_fn(value_and_grad(_loss_of(model)))(_values(variables), _values(model.non_trainable_variables), *inputs)
    by_id = {id(v): ops.convert_to_numpy(g) for v, g in zip(variables, grads)}
    return to_float(loss), {name: np.array(by_id[id(v)]) for name, v in model.spec_variables().items()}


def evaluate_batch(model: _Network, x, y) -> tuple[float, float, list[np.ndarray]]:
    """Summed cross-entropy (no balancing term) and correct predictions over the batch's targets, and
    per-layer selection counts (per expert; MoUE: per window slot, ``spec.moue.pool_usage`` maps them).
    The head chunk by chunk (``spec.losses.evaluation_sums``): no tokens x vocabulary logits."""
    with no_grad():
        loss_sum, correct, masks = _evaluation_sums_compiled(model.cfg, model.params(), to_tensor(model, x), labels_tensor(model, y))
        counts = [ops.sum(ops.cast(m, "int32"), axis=0) for m in masks]
        return to_float(loss_sum), to_float(correct), [ops.convert_to_numpy(c) for c in counts]


HEAD_GRADIENT_NAMES = ("h", "head.weight", "head.bias")


def head_gradients(h, weight, bias, labels, dtype: str = "float32") -> tuple[float, dict[str, np.ndarray]]:
    """The chunked head's mean cross-entropy (``spec.forward.linear_cross_entropy``) on NumPy states ``h``
    (N, d) and its gradients w.r.t. ``h``, ``head.weight`` and ``head.bias`` through this framework's
    autodiff (the parity matrix's head case; compiled on JAX)."""

    def loss(params, y):
        return F.linear_cross_entropy(OPS, *params, y)

    dtype = float_dtype(dtype)  # float64 on JAX: jax_enable_x64
    arrays = [ops.convert_to_tensor(np.asarray(a, dtype=dtype), dtype=dtype) for a in (h, weight, bias)]
    value, grads = compile_fn(value_and_grad(loss))(arrays, ops.convert_to_tensor(np.asarray(labels, dtype=np.int32)))
    return to_float(value), {k: np.array(ops.convert_to_numpy(g)) for k, g in zip(HEAD_GRADIENT_NAMES, grads)}


def runtime_info() -> dict:
    """Keras and backend framework versions and the device."""
    name = keras.backend.backend()
    framework = importlib.import_module(name)
    info = {"framework": f"keras-{name}", "keras": keras.__version__, name: framework.__version__}
    info["device_name"] = platform.processor() or platform.machine()
    if name == "jax":
        device = framework.devices()[0]
        info.update(device=device.platform, device_kind=device.device_kind, x64=bool(framework.config.jax_enable_x64))
    else:
        info.update(device="cuda" if framework.cuda.is_available() else "cpu", threads=framework.get_num_threads())
        if framework.cuda.is_available():
            info.update(cuda=framework.version.cuda, cuda_device=framework.cuda.get_device_name(0))
    return info
