"""One host device per core, so a program's models and seeds train in parallel.

XLA reads XLA_FLAGS once, when JAX starts its backend, so a program calls
`one_per_core()` before it imports jax:

    import host_devices

    if __name__ == "__main__":
        host_devices.one_per_core()

    import jax
"""

import os
import sys


def one_per_core(*flags):
    """Set XLA_FLAGS to one host device per core (unless already set), then add `flags`.

    Does nothing once jax is imported: its flags are read by then.
    """
    if "jax" in sys.modules:
        return
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")
    for flag in flags:
        os.environ["XLA_FLAGS"] += f" {flag}"
