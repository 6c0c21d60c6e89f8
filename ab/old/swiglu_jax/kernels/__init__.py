"""Pallas kernels: one module per backend, all with the same two functions.

Each backend module (``triton``, ``mosaic_gpu``, ``tpu``) defines::

    forward(y, bias, weights, opts, *, save_fp8, y_scale=None, interpret=False, config=None)
        -> (out, y_fp8 | None, y_scale | None)
    backward(g, y, bias, weights, opts, *, dy_dtype, y_scale=None, interpret=False,
             config=None)
        -> (dy, dbias | None, dweights | None)
    default_config(rows, hidden, dtype) -> BlockConfig

on the canonical shapes of the op layer: ``y`` is ``(N, 2, H)`` with the gate at index 0
(float16, bfloat16 or float32; in the backward also the saved ``float8_e4m3fn`` copy),
``bias`` is ``(2, H)`` or ``None``, ``weights`` is ``(N, 1)`` or ``None``, ``g`` is
``(N, H)``. ``out`` has ``y``'s dtype, ``dy`` ``dy_dtype``, ``dbias`` and ``dweights`` the
dtypes of ``bias`` and ``weights``.

``save_fp8`` is ``False``, ``True`` (``y_fp8 = _math.to_fp8(y)``) or ``"scaled"``:
``y_fp8 = _math.to_scaled_fp8(y, y_scale)`` with one float32 scale per row, ``y_scale``
``(N, 1)``, computed from the row's maximum (``_math.scale_from_amax``) unless the caller
gives it (the partition layer does when ``H`` is sharded); the backward then takes the
same ``y_scale`` with the scaled copy. Each backend's module doc says which passes over
``y`` compute the scales. The elementwise math is ``swiglu_jax._math``'s; a
backend raises ``NotImplementedError`` for what it cannot compute (float64, say), and the
dispatcher then falls back to XLA where the user asked for ``"auto"``.
"""
