"""The Triton IR of the Triton-lowered Pallas kernels, for launchers other than XLA.

Pallas lowers a ``pallas_call`` with ``pltriton.CompilerParams`` to one custom call,
``__gpu$xla.gpu.triton``, whose backend config carries the kernel as a Triton IR (TTIR)
module in MLIR bytecode, with its launch parameters (``grid_x/y/z``, ``num_warps``,
``num_stages``, ``name``). XLA compiles that module with its bundled Triton. Here the same
kernels (those of :mod:`swiglu_jax.kernels.triton`, same block configs) are lowered for
CUDA on any host and the module is printed as text, which the ``triton`` package parses
(checked with triton 3.6 and 3.8, jax 0.11.2 and 0.12) and compiles itself.

The kernel's calling convention, by Pallas' Triton lowering: one global pointer per
operand of the custom call, then one per result, in that order; no scalar arguments;
every pointer marked ``tt.divisibility = 32`` (the kernel may assume 32-byte aligned
addresses); arrays dense and row-major (the call's default layouts), at the shapes the
lowering saw (they are constants in the code); program ids ``(x, y, z)`` over ``grid``.

Lowering needs no GPU: a Hopper abstract device stands in for the compute capability,
which the lowering reads only to refuse float8 casts below 8.9 (callers targeting such
GPUs must decline float8 themselves).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
from jax._src.lib.mlir import ir
from jax._src.pallas.triton import lowering as _triton_lowering

from swiglu_jax._options import Options
from swiglu_jax.kernels import triton as kernels

CUSTOM_CALL_TARGET = "__gpu$xla.gpu.triton"
# Stands in for the GPU when lowering (see the module doc).
ABSTRACT_GPU = jax.sharding.AbstractDevice(
    device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="gpu"
)
# Ops of a lowering that compute nothing: function structure and relabelings of arrays
# (reshapes of dense row-major arrays, sharding annotations).
LAYOUT_OPS = frozenset(
    {
        "func.func",
        "func.return",
        "func.call",
        "stablehlo.reshape",
        "sdy.mesh",
        "sdy.sharding_constraint",
    }
)
# MLIR element types of the kernels' arrays, by dtype name.
ELEMENT_TYPES = {
    "bf16": "bfloat16",
    "f16": "float16",
    "f32": "float32",
    "f8E4M3FN": "float8_e4m3fn",
}


@dataclasses.dataclass(frozen=True)
class KernelIR:
    """One kernel, ready for ``triton.compile``.

    Attributes:
      name: the kernel's symbol (``swiglu_forward_triton`` or ``swiglu_backward_triton``).
      ttir: the TTIR module as MLIR text.
      grid: ``(x, y, z)`` programs.
      num_warps, num_stages: Triton's launch parameters, as XLA would use them.
      operands, results: ``(shape, dtype name)`` of each input and each output array, in
        argument order (inputs first).
      alignment: the byte alignment the kernel assumes of every pointer.
    """

    name: str
    ttir: str
    grid: tuple[int, int, int]
    num_warps: int
    num_stages: int
    operands: tuple[tuple[tuple[int, ...], str], ...]
    results: tuple[tuple[tuple[int, ...], str], ...]
    alignment: int


def _spec(shape, dtype):
    if dtype is None:
        return None
    if dtype not in ELEMENT_TYPES.values():  # before JAX silently narrows float64
        raise NotImplementedError(f"the Triton kernels do not compute {dtype}")
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))


@functools.lru_cache(maxsize=256)
def forward_ir(
    rows: int,
    hidden: int,
    y_dtype: str,
    bias_dtype: str | None,
    weights_dtype: str | None,
    opts: Options,
    save_fp8: bool | str,
) -> KernelIR:
    """The forward kernel for ``y`` ``(rows, 2, hidden)``, ``bias`` ``(2, hidden)`` and
    ``weights`` ``(rows, 1)`` (``None`` dtype: absent), with the fp8 store ``save_fp8``
    (``False``, ``True`` or ``"scaled"``, as the kernels take it). Operands: ``y`` as
    ``(rows, 2H)``, ``bias`` as ``(2H,)``, ``weights``; results: ``out`` ``(rows, H)``,
    then with a store ``y`` as float8_e4m3fn ``(rows, 2H)``, then with the scaled store
    its row scales ``y_scale`` ``(rows, 1)`` float32 (computed in the kernel, which then
    sweeps whole rows: grid ``(1, row blocks, 1)``).

    Raises ``NotImplementedError`` where the kernels decline the input (float64, 8-bit
    arrays of 2^31 elements or more) or where the lowering computes more than the kernel
    (XLA ops beside it: none so far, for every store, ``H`` below or above the kernels'
    4096-column block alike), ``ValueError`` for ``rows == 0`` (no kernel)."""

    def forward(y, bias, weights):  # 2-D arrays, as the launchers expect: no segments
        return kernels.forward(y, bias, weights, opts, save_fp8=save_fp8, segments=False)

    specs = (
        _spec((rows, 2, hidden), y_dtype),
        _spec((2, hidden), bias_dtype),
        _spec((rows, 1), weights_dtype),
    )
    return _lower(forward, specs, alone=True)


@functools.lru_cache(maxsize=256)
def backward_ir(
    rows: int,
    hidden: int,
    g_dtype: str,
    y_dtype: str,
    bias_dtype: str | None,
    weights_dtype: str | None,
    opts: Options,
    y_scale_dtype: str | None = None,
) -> KernelIR:
    """The backward kernel for ``g`` ``(rows, hidden)`` (whose dtype ``dy`` takes) and the
    forward's inputs (``y`` possibly the float8_e4m3fn copy, with the scaled store's row
    scales ``y_scale`` ``(rows, 1)``, float32 from the forward). Operands: ``g``, ``y`` as
    ``(rows, 2H)``, ``bias`` as ``(2H,)``, ``weights``, ``y_scale``; results: ``dy``
    ``(rows, 2H)``, then with ``bias`` its float32 partial sums ``(row groups, 2H)`` and
    with ``weights`` theirs ``(rows, hidden blocks)``, which the caller reduces: the
    bias's with :func:`sum_rows_ir`'s kernel, the weights' (sum over axis 1) itself, then
    casts to the dtype of ``weights``. Raises as :func:`forward_ir`."""
    config = kernels.backward_config(
        rows,
        hidden,
        jnp.dtype(g_dtype),
        bias=bias_dtype is not None,
        weights=weights_dtype is not None,
    )

    def backward(g, y, bias, weights, y_scale):
        return kernels.backward_partials(
            g, y, bias, weights, opts, dy_dtype=g.dtype, y_scale=y_scale, config=config
        )

    specs = (
        _spec((rows, hidden), g_dtype),
        _spec((rows, 2, hidden), y_dtype),
        _spec((2, hidden), bias_dtype),
        _spec((rows, 1), weights_dtype),
        _spec((rows, 1), y_scale_dtype),
    )
    return _lower(backward, specs, alone=True)


@functools.lru_cache(maxsize=256)
def sum_rows_ir(rows: int, columns: int, dtype: str) -> KernelIR:
    """The kernel that sums float32 partial sums ``(rows, columns)`` over rows into
    ``(columns,)`` of ``dtype`` (:func:`swiglu_jax.kernels.triton.sum_rows`: the bias
    gradient from :func:`backward_ir`'s partials, as the JAX path sums them)."""
    if dtype not in ELEMENT_TYPES.values():
        raise NotImplementedError(f"the Triton kernels do not compute {dtype}")
    summed = functools.partial(kernels.sum_rows, dtype=jnp.dtype(dtype))
    return _lower(summed, (_spec((rows, columns), "float32"),), alone=True)


def _lower(fn, specs, *, alone: bool = False) -> KernelIR:
    """The kernel of ``fn`` lowered at ``specs``; with ``alone``, declines a lowering with
    ops other than the kernel and relabelings of arrays (``LAYOUT_OPS``)."""
    if specs[0].shape[0] == 0:
        raise ValueError("no kernel runs for zero rows")
    mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=ABSTRACT_GPU)
    try:
        with jax.sharding.use_abstract_mesh(mesh):  # traced and lowered under it
            lowered = jax.jit(fn).trace(*specs).lower(lowering_platforms=("cuda",))
    except NotImplementedError:  # the kernels decline the input
        raise
    except Exception as error:
        # Not seen so far; where a local GPU can tell its compute capability, ask it.
        try:
            lowered = jax.jit(fn).trace(*specs).lower(lowering_platforms=("cuda",))
        except Exception:
            raise error from None
    module = lowered.compiler_ir("stablehlo").operation
    calls = _custom_calls(module)
    if len(calls) != 1:
        raise RuntimeError(f"expected one Triton kernel in the lowering, found {len(calls)}")
    others = sorted(_ops_besides_layout(module))
    if alone and others:
        raise NotImplementedError(f"the kernel runs with XLA ops beside it: {others}")
    return _kernel_ir(calls[0])


def _custom_calls(op) -> list:
    found = []
    for region in op.regions:
        for block in region:
            for child in block:
                if child.operation.name == "stablehlo.custom_call":
                    target = ir.StringAttr(child.attributes["call_target_name"]).value
                    if target == CUSTOM_CALL_TARGET:
                        found.append(child)
                found += _custom_calls(child.operation)
    return found


def _ops_besides_layout(op) -> set[str]:
    found = set()
    for region in op.regions:
        for block in region:
            for child in block:
                name = child.operation.name
                if name == "stablehlo.custom_call":
                    target = ir.StringAttr(child.attributes["call_target_name"]).value
                    name = None if target in (CUSTOM_CALL_TARGET, "Sharding") else target
                if name is not None and name not in LAYOUT_OPS:
                    found.add(name)
                found |= _ops_besides_layout(child.operation)
    return found


def _array(value) -> tuple[tuple[int, ...], str]:
    array_type = ir.RankedTensorType(value.type)
    return tuple(array_type.shape), ELEMENT_TYPES[str(array_type.element_type)]


# jaxlib's Triton prints a load's or store's cache policy as one attribute; the triton
# package parses it as two optional keywords of the op (absent: "none" and "normal").
_CACHE_POLICY = re.compile(
    r" \{cachePolicy = #tt\.cache_policy<cache_modifier = (\w+), eviction_policy = (\w+)>\}"
)


def _upstream_cache_policy(ttir: str) -> str:
    def keywords(match):
        modifier, eviction = match.groups()
        words = [] if modifier == "none" else [f"cacheModifier = {modifier}"]
        words += [] if eviction == "normal" else [f"evictionPolicy = {eviction}"]
        return "".join(f" {word}" for word in words)

    return _CACHE_POLICY.sub(keywords, ttir)


def _kernel_ir(call) -> KernelIR:
    config = ir.DictAttr(call.attributes["mhlo.backend_config"])

    def integer(name):
        return ir.IntegerAttr(config[name]).value

    bytecode = ir.StringAttr(config["ir"]).value_bytes
    with _triton_lowering._new_ir_context(), ir.Location.unknown():
        module = ir.Module.parse(bytecode)
        ttir = _upstream_cache_policy(module.operation.get_asm(enable_debug_info=False))
    alignments = {int(a) for a in re.findall(r"tt\.divisibility = (\d+)", ttir)}
    return KernelIR(
        name=ir.StringAttr(config["name"]).value,
        ttir=ttir,
        grid=(integer("grid_x"), integer("grid_y"), integer("grid_z")),
        num_warps=integer("num_warps"),
        num_stages=integer("num_stages"),
        operands=tuple(_array(v) for v in call.operands),
        results=tuple(_array(v) for v in call.results),
        alignment=max(alignments, default=1),
    )
