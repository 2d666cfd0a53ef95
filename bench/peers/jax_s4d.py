"""JAX reference for `statespace bench`: the S4D kernel (S4D-Lin, ZOH) from the paper's formula,
K = 2 Re Σ_m C̃_m exp(ΔA_m l), forward and jit(value_and_grad) with respect to (log Δ, log(−Re A), Im A, C).

    python jax_s4d.py --h 256 --m 64 --l 4096
"""
import argparse, json, math, os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
from common import peak_rss_mib, timeit
import jax
import jax.numpy as jnp


def kernel(params, l):
    log_dt, log_a_real, a_imag, c_re, c_im = params
    a = -jnp.exp(log_a_real) + 1j * a_imag
    dta = a * jnp.exp(log_dt)[:, None]
    c = (c_re + 1j * c_im) * (jnp.exp(dta) - 1.0) / a
    vand = jnp.exp(dta[:, :, None] * jnp.arange(l))  # [H, M, L]
    return 2 * jnp.einsum("hm,hml->hl", c, vand).real


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--h", type=int, default=256)
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--l", type=int, default=4096)
    p.add_argument("--secs", type=float, default=3.0)
    a = p.parse_args()
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    h, m, l = a.h, a.m, a.l
    params = (
        jax.random.uniform(k1, (h,)) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3),
        jnp.log(0.5 * jnp.ones((h, m))),
        math.pi * jnp.tile(jnp.arange(m, dtype=jnp.float32), (h, 1)),
        jax.random.normal(k2, (h, m)) * 0.5**0.5,
        jax.random.normal(k3, (h, m)) * 0.5**0.5,
    )
    w = jax.random.normal(k3, (h, l))
    fwd = jax.jit(lambda p: kernel(p, l))
    both = jax.jit(jax.value_and_grad(lambda p: jnp.sum(kernel(p, l) * w)))
    tf = timeit(lambda: fwd(params).block_until_ready(), min_secs=a.secs)
    tb = timeit(lambda: jax.block_until_ready(both(params)), min_secs=a.secs)
    shape = f"H={h} M={m} (N={2 * m}) L={l}"
    peer = "jax " + jax.__version__
    rss = peak_rss_mib()
    for name, t in (("s4d_kernel_fwd", tf), ("s4d_kernel_fwd_bwd", tb)):
        print(json.dumps(dict(name=name, shape=shape, median_s=t[0], min_s=t[1], reps=t[2], peer=peer,
                              peak_rss_mib=rss)))


if __name__ == "__main__":
    main()
