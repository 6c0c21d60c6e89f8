import jax, jax.numpy as jnp
from swiglu_jax.reference import swiglu_reference
y = jax.random.normal(jax.random.key(0), (4096, 4096), jnp.bfloat16)
g = jax.random.normal(jax.random.key(1), (4096, 2048), jnp.bfloat16)
jax.block_until_ready(jax.jit(swiglu_reference)(y))
jax.block_until_ready(jax.jit(lambda g, y: jax.vjp(swiglu_reference, y)[1](g)[0])(g, y))
