"""The Flax layers: NNX and linen SwiGLU MLPs match the same MLP written with plain jnp
(forward and gradients), run under nnx.jit / nnx.grad / value_and_grad, train with optax,
and serve as MoE experts through the weighted op."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
optax = pytest.importorskip("optax")

from flax import nnx  # noqa: E402

from swiglu_jax import testing  # noqa: E402
from swiglu_jax.nn import SwiGLUMLP  # noqa: E402
from swiglu_jax.nn import linen as swiglu_linen  # noqa: E402
from swiglu_jax.reference import swiglu_reference  # noqa: E402

GPT_OSS = {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0}
OPTION_CASES = {
    "plain": {},
    "gpt_oss": GPT_OSS,
    "fp8_store": {"fp8_input_store": True},
    "scaled_fp8_store": {"fp8_input_store": "scaled"},
    "interpret": {"implementation": "interpret"},
}


def jnp_mlp(w_up, b_up, w_down, b_down, x, weights=None, **options):
    """The same MLP, differentiated by JAX's autodiff through the jnp specification."""
    spec = {k: v for k, v in options.items() if k in ("clamp_value", "alpha", "linear_offset")}
    y = x @ w_up
    h = swiglu_reference(y, b_up, weights, **spec)
    out = h @ w_down
    return out if b_down is None else out + b_down


def nnx_params(model):
    """``(w_up, b_up, w_down, b_down)`` of a model or of its gradient ``State``."""

    def value(node, name):
        param = getattr(node, name, None)
        return None if param is None else param[...]

    return (
        value(model.up, "kernel"),
        value(model, "up_bias"),
        value(model.down, "kernel"),
        value(model.down, "bias"),
    )


def inputs(rng, rows=12, features=16, with_weights=False):
    x = jnp.asarray(rng.standard_normal((rows, features)), jnp.float32)
    weights = jnp.asarray(rng.uniform(size=(rows, 1)), jnp.float32) if with_weights else None
    return x, weights


def close(actual, expected, terms=1):
    error = testing.relative_error(np.asarray(actual), np.asarray(expected, np.float64))
    assert error <= testing.tolerance("float32", terms=terms), error


@pytest.mark.parametrize("with_weights", [False, True], ids=["dense", "weighted"])
@pytest.mark.parametrize("use_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("case", OPTION_CASES)
def test_nnx_matches_jnp_forward_and_gradients(rng, case, use_bias, with_weights):
    options = OPTION_CASES[case]
    seed = int(rng.integers(1 << 30))
    model = SwiGLUMLP(16, 24, use_bias=use_bias, rngs=nnx.Rngs(seed), **options)
    if use_bias:  # nonzero biases, so that their gradients are exercised
        model.up_bias[...] = jnp.asarray(rng.standard_normal(48), jnp.float32)
        model.down.bias[...] = jnp.asarray(rng.standard_normal(16), jnp.float32)
    x, weights = inputs(rng, with_weights=with_weights)
    params = nnx_params(model)
    fp8 = options.get("fp8_input_store", False)

    def reference_loss(params, x):
        return jnp.sum(jnp_mlp(*params, x, weights, **options) ** 2)

    def loss(model, x):
        return jnp.sum(model(x, weights) ** 2)

    close(model(x, weights), jnp_mlp(*params, x, weights, **options))
    value, grads = nnx.value_and_grad(loss, argnums=(0, 1))(model, x)
    expected_value, expected = jax.value_and_grad(reference_loss, argnums=(0, 1))(params, x)
    close(value, expected_value)
    model_grads, x_grad = grads
    if not fp8:  # the fp8 store differentiates at the rounded input, the spec does not
        close(x_grad, expected[1])
        for actual, wanted in zip(nnx_params(model_grads), expected[0], strict=True):
            if wanted is not None:
                close(actual, wanted, terms=x.shape[0])


def test_nnx_options_are_checked():
    with pytest.raises(TypeError, match=r"unknown option.*'layout'"):
        SwiGLUMLP(4, 4, layout="stacked", rngs=nnx.Rngs(0))
    model = SwiGLUMLP(4, 4, clamp_value=-1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="clamp_value"):
        model(jnp.ones((2, 4)))


def regression_data(rng, rows=256, features=8):
    x = rng.standard_normal((rows, features)).astype(np.float32)
    target = np.tanh(x @ rng.standard_normal((features, features))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(target)


def test_nnx_trains_with_optax(rng):
    x, target = regression_data(rng)
    model = SwiGLUMLP(8, 32, use_bias=True, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, target):
        def loss_fn(model):
            return jnp.mean((model(x) - target) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, x, target)) for _ in range(60)]
    assert losses[-1] < 0.25 * losses[0], losses[::10]


def test_nnx_grad_under_jit(rng):
    model = SwiGLUMLP(8, 8, rngs=nnx.Rngs(1))
    x, _ = inputs(rng, features=8)
    grads = nnx.jit(nnx.grad(lambda m, x: jnp.sum(m(x))))(model, x)
    expected = jax.grad(lambda p: jnp.sum(jnp_mlp(*p, x)))(nnx_params(model))
    close(grads.up.kernel[...], expected[0], terms=x.shape[0])
    close(grads.down.kernel[...], expected[2], terms=x.shape[0])


@pytest.mark.parametrize("use_bias", [False, True], ids=["no_bias", "bias"])
def test_linen_matches_jnp_and_trains(rng, use_bias):
    x, target = regression_data(rng)
    mlp = swiglu_linen.SwiGLUMLP(hidden_features=32, use_bias=use_bias, options=GPT_OSS)
    variables = mlp.init(jax.random.key(0), x)
    params = variables["params"]
    if use_bias:
        params = {**params, "up_bias": jnp.asarray(rng.standard_normal(64), jnp.float32)}

    def as_tuple(p):
        return (
            p["up"]["kernel"],
            p.get("up_bias"),
            p["down"]["kernel"],
            p["down"].get("bias"),
        )

    close(mlp.apply({"params": params}, x), jnp_mlp(*as_tuple(params), x, **GPT_OSS))
    grads = jax.grad(lambda p: jnp.sum(mlp.apply({"params": p}, x) ** 2))(params)
    expected = jax.grad(lambda p: jnp.sum(jnp_mlp(*as_tuple(p), x, **GPT_OSS) ** 2))(params)
    for actual, wanted in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        close(actual, wanted, terms=x.shape[0])

    tx = optax.adam(1e-2)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean((mlp.apply({"params": p}, x) - target) ** 2)
        )(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(60):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.25 * losses[0], losses[::10]


def test_moe_experts_with_router_probabilities(rng):
    """Top-1 routing over 3 experts: each expert runs on all tokens with its router
    probability as the op's weights (zero for tokens routed elsewhere), and the sum
    equals the same MoE written with jnp, forward and gradients."""
    tokens, features, experts = 20, 8, 3
    x, _ = inputs(rng, rows=tokens, features=features)
    router = nnx.Linear(features, experts, rngs=nnx.Rngs(3))
    mlps = [SwiGLUMLP(features, 12, rngs=nnx.Rngs(10 + e)) for e in range(experts)]

    def moe(router, mlps, x):
        probs = jax.nn.softmax(router(x), axis=-1)
        top = jnp.argmax(probs, axis=-1)
        out = 0
        for e, mlp in enumerate(mlps):
            gate = jnp.where(top == e, probs[:, e], 0.0)[:, None]
            out = out + mlp(x, weights=gate)
        return out

    def moe_jnp(router_params, mlp_params, x):
        kernel, bias = router_params
        probs = jax.nn.softmax(x @ kernel + bias, axis=-1)
        top = jnp.argmax(probs, axis=-1)
        out = 0
        for e, params in enumerate(mlp_params):
            gate = jnp.where(top == e, probs[:, e], 0.0)[:, None]
            out = out + jnp_mlp(*params, x, gate)
        return out

    router_params = (router.kernel[...], router.bias[...])
    mlp_params = [nnx_params(m) for m in mlps]
    close(moe(router, mlps, x), moe_jnp(router_params, mlp_params, x))
    grads = nnx.grad(lambda r, m: jnp.sum(moe(r, m, x) ** 2), argnums=(0, 1))(router, mlps)
    expected = jax.grad(lambda r, m: jnp.sum(moe_jnp(r, m, x) ** 2), argnums=(0, 1))(
        router_params, mlp_params
    )
    close(grads[0].kernel[...], expected[0][0], terms=tokens)
    for actual, wanted in zip(grads[1], expected[1], strict=True):
        close(actual.up.kernel[...], wanted[0], terms=tokens)
        close(actual.down.kernel[...], wanted[2], terms=tokens)
