"""The ops on sharded arrays: every shard computes its own tokens and hidden columns.

The op layer hands this module arrays with their leading (token) axes ``L`` intact:
``y`` as ``(*L, 2, H)`` (gate at index 0), ``bias`` as ``(2, H)``, ``weights`` and the
row scales of the scaled fp8 store as ``(*L, 1)`` and the cotangent ``g`` as ``(*L, H)``.
SwiGLU is independent across tokens and across hidden columns, so any sharding of ``L``
and of ``H`` computes shard-locally; only three reductions communicate: the bias gradient
sums over tokens (a float32 all-reduce over the mesh axes that shard ``L``), the weights
gradient over ``H`` (over the axes that shard ``H``), and so does the scaled fp8 store's
row maximum (an all-reduce of one float32 per token, before the kernel that quantizes).
The pair axis of size 2 is never split: a shard holds the gate and linear halves of the
same columns, which is why the stacked layout keeps a sharded ``H`` local and the split
layout ``(..., 2H)`` cannot.

How the program learns this depends on how the arrays are sharded:

- Explicitly (the sharding is part of the type; ``jax.make_mesh``'s default axis type):
  ``jax.shard_map`` over the mesh of ``y``'s type, with the specs read from it.
- Automatically (``jax.jit`` of arrays with a ``NamedSharding`` on ``Auto`` axes, where
  the partitioner chooses): ``custom_partitioning`` with a Shardy rule for propagation and
  a partition callback that keeps every operand's sharding of ``L`` and ``H``. It needs
  devices when lowered, so it is used only where more than one device could run the
  program. Not partitioned, but correct (the partitioner gathers the operands): under
  ``vmap``, with kernels that have ordered side effects (the TPU and Mosaic GPU
  interpreters), and under an abstract mesh alone (``jax.export``), where the op runs
  whole in a ``shard_map`` over replicated operands.
- ``implementation="xla"``: none of this. XLA partitions its own ``jax.numpy`` the same
  way, inserting the two all-reduces itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from swiglu_jax import _dispatch, _math
from swiglu_jax._options import Options

# What each argument and result of a method is, in the order the implementations take
# and return them: "pairs" (*L, 2, H), "columns" (*L, H), "bias" (2, H), "tokens" (*L, 1)
# (the weights, and the row scales ``y_scale`` that the forward returns with the scaled
# fp8 copy and the backward takes last, by keyword in the implementations).
SIGNATURES = {
    "forward": (("pairs", "bias", "tokens"), ("columns", "pairs", "tokens")),
    "backward": (("columns", "pairs", "bias", "tokens", "tokens"), ("pairs", "bias", "tokens")),
}
# Shardy's view of the same: "..." are the token axes, "pair" must stay whole.
FACTORS = {"pairs": "... pair h", "columns": "... h", "bias": "pair h", "tokens": "... one"}


def _axis_names(entry) -> tuple[str, ...]:
    """The mesh axes named by one entry of a ``PartitionSpec``."""
    if entry is None or entry is P.UNCONSTRAINED:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


class Plan(NamedTuple):
    """How ``y`` is split: the spec entries of its token axes and of ``H``."""

    tokens: tuple = ()
    hidden: object = None

    @classmethod
    def of(cls, spec, ndim: int) -> Plan:
        """The plan for ``y`` of rank ``ndim`` with the ``PartitionSpec`` ``spec``."""
        spec = tuple(spec) + (None,) * (ndim - len(spec))
        return cls(spec[:-2], spec[-1])

    @property
    def token_axes(self) -> tuple[str, ...]:
        return tuple(a for entry in self.tokens for a in _axis_names(entry))

    @property
    def hidden_axes(self) -> tuple[str, ...]:
        return _axis_names(self.hidden)

    def spec(self, kind: str) -> P:
        return {
            "pairs": P(*self.tokens, None, self.hidden),
            "columns": P(*self.tokens, self.hidden),
            "bias": P(None, self.hidden),
            "tokens": P(*self.tokens, None),
        }[kind]


def pairs(x, hidden: int):
    """``x`` (``y`` or ``bias`` of either layout) with its last axis as ``(2, H)``.

    A free reshape, except for a split last axis ``(2H)`` that is sharded explicitly: its
    shards hold gate columns or linear columns rather than both, so it is gathered first
    (under automatic sharding, XLA moves the same data for the reshape).
    """
    if x is None or x.shape[-1] == hidden:
        return x
    if _explicitly_sharded(x):
        spec = tuple(jax.typeof(x).sharding.spec) + (None,) * x.ndim
        x = jax.sharding.reshard(x, P(*spec[: x.ndim - 1], None))
    return x.reshape(*x.shape[:-1], 2, hidden)


def _widened(x):
    """``x`` in at least float32, so that a gradient summed across shards rounds once."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _rows(x, tokens: int):
    """``x`` with its ``tokens`` leading axes flattened into one, the implementations' view."""
    return None if x is None else x.reshape(-1, *x.shape[tokens:])


def _dispatched(method: str, opts: Options, args, static: dict):
    """``_dispatch.call`` on the arrays of ``SIGNATURES[method]``, the backward's last
    (the row scales) passed by keyword as the implementations take it."""
    if method == "backward":
        *args, y_scale = args
        static = {**static, "y_scale": y_scale}
    return _dispatch.call(method, opts, *args, **static)


def local(method: str, opts: Options, static: dict, plan: Plan) -> Callable:
    """``method`` on one shard's arrays laid out as ``plan`` says, with the reductions
    across shards that the gradients of ``bias`` and ``weights`` and the row scales of
    the scaled fp8 store need."""

    def forward(y, bias, weights):
        tokens = y.ndim - 2
        y_scale = None
        if static["save_fp8"] == "scaled" and plan.hidden_axes:
            # A row spans the hidden shards: its maximum too, which the kernels then take.
            amax = lax.pmax(_math.row_amax(y), plan.hidden_axes)
            y_scale = _rows(_math.scale_from_amax(amax), tokens)
        out, y_fp8, y_scale = _dispatch.call(
            "forward",
            opts,
            _rows(y, tokens),
            bias,
            _rows(weights, tokens),
            y_scale=y_scale,
            **static,
        )
        fp8 = None if y_fp8 is None else y_fp8.reshape(y.shape)
        scale = None if y_scale is None else y_scale.reshape(*y.shape[:-2], 1)
        return out.reshape(*y.shape[:-2], y.shape[-1]), fp8, scale

    def backward(g, y, bias, weights, y_scale):
        tokens = y.ndim - 2
        sum_bias = bias is not None and plan.token_axes
        sum_weights = weights is not None and plan.hidden_axes
        dy, dbias, dweights = _dispatched(
            "backward",
            opts,
            (
                _rows(g, tokens),
                _rows(y, tokens),
                _widened(bias) if sum_bias else bias,
                _rows(_widened(weights) if sum_weights else weights, tokens),
                _rows(y_scale, tokens),
            ),
            static,
        )
        if sum_bias:
            dbias = lax.psum(dbias, plan.token_axes).astype(bias.dtype)
        if sum_weights:
            dweights = lax.psum(dweights, plan.hidden_axes).astype(weights.dtype)
        if dweights is not None:
            dweights = dweights.reshape(weights.shape)
        return dy.reshape(y.shape), dbias, dweights

    return forward if method == "forward" else backward


def _present_only(fn: Callable, present: tuple[bool, ...]) -> Callable:
    """``fn`` as a function of the arguments ``present`` marks, returning the results
    that are not ``None``: what ``custom_partitioning`` and ``shard_map`` need."""

    def flat(*arrays):
        it = iter(arrays)
        outs = fn(*(next(it) if p else None for p in present))
        return tuple(x for x in outs if x is not None)

    return flat


def _kinds(method: str, present: tuple[bool, ...], static: dict):
    """The kinds of the present arguments and of the results that will be returned."""
    kinds_in, kinds_out = SIGNATURES[method]
    if method == "forward":
        returned = (True, bool(static["save_fp8"]), static["save_fp8"] == "scaled")
    else:
        returned = (True, present[2], present[3])
    return (
        tuple(k for k, p in zip(kinds_in, present, strict=True) if p),
        tuple(k for k, p in zip(kinds_out, returned, strict=True) if p),
    )


@functools.cache
def _partitioned(method: str, opts: Options, static_items: tuple, present: tuple[bool, ...]):
    """``method`` under ``custom_partitioning`` (and ``custom_vmap``), for the arguments
    ``present`` marks."""
    static = dict(static_items)
    kinds_in, kinds_out = _kinds(method, present, static)
    y_index = kinds_in.index("pairs")

    def plan_and_shardings(mesh, arg_shapes):
        y = arg_shapes[y_index]
        spec = getattr(y.sharding, "spec", None)
        if spec is None:  # No mesh to read specs on: replicate, correct if not fast.
            return Plan(), None, None
        plan = Plan.of(spec, len(y.shape))
        shard = lambda kind: NamedSharding(mesh, plan.spec(kind))
        return plan, tuple(shard(k) for k in kinds_in), tuple(shard(k) for k in kinds_out)

    def partition(mesh, arg_shapes, result_shape):
        plan, in_shardings, out_shardings = plan_and_shardings(mesh, arg_shapes)
        if in_shardings is None:
            in_shardings = tuple(x.sharding for x in arg_shapes)
            out_shardings = tuple(x.sharding for x in result_shape)
        per_shard = _present_only(local(method, opts, static, plan), present)
        return mesh, per_shard, out_shardings, in_shardings

    def infer_sharding_from_operands(mesh, arg_shapes, result_shape):  # GSPMD's hook
        _, _, out_shardings = plan_and_shardings(mesh, arg_shapes)
        return out_shardings or tuple(x.sharding for x in result_shape)

    rule = (
        ", ".join(FACTORS[k] for k in kinds_in) + " -> " + ", ".join(FACTORS[k] for k in kinds_out)
    )
    unsharded = _present_only(local(method, opts, static, Plan()), present)
    fn = custom_partitioning(unsharded)
    fn.def_partition(
        partition,
        infer_sharding_from_operands=infer_sharding_from_operands,
        sharding_rule=rule,
        need_replication_factors=("pair",),
    )

    # custom_partitioning has no batching rule: vmap runs the implementation as is.
    batchable = jax.custom_batching.custom_vmap(lambda *arrays: fn(*arrays))

    @batchable.def_vmap
    def _vmapped(axis_size, in_batched, *arrays):
        del axis_size
        outs = jax.vmap(unsharded, in_axes=[0 if b else None for b in in_batched])(*arrays)
        return outs, tuple(True for _ in outs)

    return batchable


def _explicit_mesh(x):
    """The mesh of ``x``'s type where it has ``Explicit`` axes (then the type says how
    ``x`` is sharded over them), else ``None``."""
    mesh = getattr(jax.typeof(x).sharding, "mesh", None)
    if mesh is None or mesh.empty:  # Unsharded types under jax.set_mesh are exact too.
        mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty or AxisType.Explicit not in mesh.axis_types else mesh


def _explicitly_sharded(x) -> bool:
    """Whether ``x``'s type carries a sharding over an ``Explicit`` mesh axis."""
    mesh = _explicit_mesh(x)
    if mesh is None:
        return False
    types = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    names = [a for entry in jax.typeof(x).sharding.spec for a in _axis_names(entry)]
    return any(types[a] == AxisType.Explicit for a in names)


def _partitioner_may_split() -> bool:
    """Whether the program could be partitioned over several devices, with the devices
    known when it is lowered (which ``custom_partitioning`` needs)."""
    context = jax.sharding.get_abstract_mesh()
    if not context.empty:
        # jax.set_mesh gives a concrete mesh too; use_abstract_mesh (export) does not.
        return context.size > 1 and not _concrete_mesh().empty
    return jax.device_count() > 1


def _concrete_mesh():
    """The mesh of ``jax.set_mesh``, also inside ``jax.jit`` (where the public
    ``jax.sharding.get_mesh`` refuses to answer)."""
    from jax._src import mesh  # private: no public equivalent under jit

    return mesh.get_concrete_mesh()


def _ordered_effects(fn: Callable, *args) -> bool:
    """Whether ``fn`` has ordered side effects (the TPU and Mosaic GPU interpreters call
    back into Python in order), which ``custom_partitioning`` cannot carry."""
    return bool(jax.make_jaxpr(fn)(*args).effects)


def _shard_mapped(method: str, opts: Options, static: dict, present, plan: Plan, mesh):
    """``method`` under ``jax.shard_map`` over ``mesh``, for arrays sharded as ``plan``."""
    kinds_in, kinds_out = _kinds(method, present, static)
    specs_in = tuple(plan.spec(k) for k in kinds_in)
    fn = jax.shard_map(
        _present_only(local(method, opts, static, plan), present),
        mesh=mesh,
        in_specs=specs_in,
        out_specs=tuple(plan.spec(k) for k in kinds_out),
        check_vma=False,  # pallas_call's results carry no varying-axes types.
    )

    def run(*arrays):
        to = lambda spec: NamedSharding(mesh, spec)
        return fn(*(jax.sharding.reshard(x, to(s)) for x, s in zip(arrays, specs_in, strict=True)))

    return run


def call(method: str, opts: Options, *args, **static):
    """``method`` ("forward" or "backward") of the implementation ``opts`` selects, on the
    arrays of the module docstring in the order of ``SIGNATURES`` (``y, bias, weights``;
    ``g, y, bias, weights, y_scale``), partitioned as their shardings say.

    Returns ``(out, y_fp8 | None, y_scale | None)`` for the forward, ``(dy, dbias | None,
    dweights | None)`` for the backward, each in the shape of its argument.
    """
    present = tuple(x is not None for x in args)
    arrays = tuple(x for x in args if x is not None)
    y = args[SIGNATURES[method][0].index("pairs")]
    explicit = _explicit_mesh(y) is not None
    unsharded = local(method, opts, static, Plan())
    if opts.implementation == "xla":  # XLA partitions jax.numpy itself.
        results = _dispatched(method, opts, args, static)
    elif explicit:  # The type says it all: shard-locally as it says.
        plan = Plan.of(jax.typeof(y).sharding.spec, y.ndim)
        if plan.token_axes or plan.hidden_axes:
            fn = _shard_mapped(method, opts, static, present, plan, _explicit_mesh(y))
            results = _with_absent(method, present, static, fn(*arrays))
        else:
            results = unsharded(*args)
    elif _partitioner_may_split() and not _ordered_effects(unsharded, *args):
        key = tuple(sorted(static.items()))
        outs = _partitioned(method, opts, key, present)(*arrays)
        results = _with_absent(method, present, static, outs)
    elif (context := jax.sharding.get_abstract_mesh()).size > 1 and _concrete_mesh().empty:
        # An abstract mesh alone (jax.export): the specs are unknown until partitioned,
        # so gather and compute whole, in a manual context (Mosaic TPU's requirement).
        fn = _shard_mapped(method, opts, static, present, Plan(), context)
        results = _with_absent(method, present, static, fn(*arrays))
    else:
        results = unsharded(*args)
    if explicit and method == "backward":
        # Explicit sharding types a cotangent like its primal: each as its argument.
        results = tuple(
            d if d is None else _resharded_like(d, x)
            for d, x in zip(results, args[1:4], strict=True)
        )
    return results


def _resharded_like(x, like):
    sharding = jax.typeof(like).sharding
    return x if sharding.mesh.empty else jax.sharding.reshard(x, sharding)


def _with_absent(method: str, present, static: dict, outs) -> tuple:
    """The results of a function from ``_present_only`` as the implementations return
    them, ``None`` where absent."""
    outs = iter(outs)
    if method == "forward":
        out = next(outs)
        fp8 = next(outs) if static["save_fp8"] else None
        return out, fp8, (next(outs) if static["save_fp8"] == "scaled" else None)
    return next(outs), (next(outs) if present[2] else None), (next(outs) if present[3] else None)
