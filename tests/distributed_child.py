"""One of the processes of `test_distributed.py`: `fit` over a mesh spanning 2 processes.

    JAX_PLATFORMS=cpu python tests/distributed_child.py PROCESS_ID PORT OUT_DIR

Each process has one CPU device; they meet at 127.0.0.1:PORT (process 0 runs the
coordinator) and talk through gloo. In order, each process:
1. fits full batch and with minibatches over the global mesh (process 0 also alone,
   without a mesh, for reference) and writes the params to OUT_DIR/params_{PROCESS_ID}.npz;
2. fits half the epochs with a checkpoint in OUT_DIR (one file, shared), then
   resumes it to the end, counting the calls of `save` it makes; then the same with
   global arrays of which each process holds half the samples;
3. passes other data than process 0 (process 1 does) and records the error;
4. writes OUT_DIR/result_{PROCESS_ID}.json, prints "looping" and trains until it
   is killed or fails (the test kills the other process).
"""

import json
import os
import sys
import time

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")

EPOCHS = 8
HEARTBEAT_S = 10  # a silent process is declared dead after this long


def main(process_id, port, out):
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
        heartbeat_timeout_seconds=HEARTBEAT_S,
        shutdown_timeout_seconds=10,
    )
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import fnnet

    from fnnet import fitting as fit_module

    saves = []
    save = fit_module.save_run

    def counting_save(*args, **kwargs):  # fit's own `save_run`, counted
        saves.append(kwargs.get("metadata", {}).get("epochs_done"))
        return save(*args, **kwargs)

    fit_module.save_run = counting_save

    model = fnnet.serial(fnnet.Linear(2, 8), fnnet.Tanh(), fnnet.Linear(8, 1), fnnet.Sigmoid())
    loss, opt = fnnet.LossBCE(), fnnet.SGD(lr=0.5)
    x, y = fnnet.data.disk(jax.random.key(1), 64)
    params = model.init(jax.random.key(0), x.shape)[1]
    mesh = Mesh(np.array(jax.devices()), ("data",))
    assert len(jax.devices()) == 2 and len(jax.local_devices()) == 1, jax.devices()

    def train(mesh, batch_size, epochs=EPOCHS, data=(x, y), **kwargs):
        return fnnet.fit(
            model,
            loss,
            opt,
            params,
            *data,
            epochs=epochs,
            batch_size=batch_size,
            progress=False,
            mesh=mesh,
            **kwargs,
        )

    arrays = {}
    for batch_size in (None, 16):
        for name, where in [("alone", None)] * (process_id == 0) + [("mesh", mesh)]:
            result = train(where, batch_size)
            for i, leaf in enumerate(jax.tree.leaves(result.params)):
                arrays[f"{name}_{batch_size}_{i}"] = np.asarray(leaf)
            arrays[f"{name}_{batch_size}_losses"] = result.losses
    np.savez(os.path.join(out, f"params_{process_id}.npz"), **arrays)

    def checkpoint_and_resume(name, data):
        """Half the epochs with a checkpoint (one path: a file system both share), then a
        resume to the end; its params and losses to OUT_DIR/{name}_{PROCESS_ID}.npz."""
        checkpoint = os.path.join(out, f"{name}.npz")
        train(mesh, 16, EPOCHS // 2, data, checkpoint=checkpoint, checkpoint_every=1)
        resumed = train(mesh, 16, EPOCHS, data, checkpoint=checkpoint, checkpoint_every=1, resume=True)
        np.savez(
            os.path.join(out, f"{name}_{process_id}.npz"),
            *[np.asarray(leaf) for leaf in jax.tree.leaves(resumed.params)],
            losses=resumed.losses,
        )

    checkpoint_and_resume("resumed", (x, y))
    mesh_saves = list(saves)
    # Global data, each process holding its half of the samples.
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    half = slice(process_id * (len(x) // 2), (process_id + 1) * (len(x) // 2))
    checkpoint_and_resume(
        "global",
        [jax.make_array_from_process_local_data(sharding, np.asarray(a)[half], np.shape(a)) for a in (x, y)],
    )

    try:  # process 1 passes other targets
        fnnet.fit(
            model, loss, opt, params, x, 1 - y if process_id else y, epochs=1, progress=False, mesh=mesh
        )
        other_data = None
    except ValueError as error:
        other_data = str(error)

    with open(os.path.join(out, f"result_{process_id}.json"), "w") as file:
        json.dump({"saves": mesh_saves, "other_data": other_data}, file)
    print("looping", flush=True)
    while True:  # until the test kills one process: then the other must fail, not hang
        train(mesh, 16)
        time.sleep(0.01)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
