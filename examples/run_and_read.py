"""Run an experiment from Python, store it, and read its trajectories back.

    python examples/run_and_read.py [OUT.h5]     (default data/example.h5)

The same as `icldyn run linreg --set ... --out OUT.h5 --no-plot`, step by step.
"""

import sys

from dynamics import store
from sims import registry

out = sys.argv[1] if len(sys.argv) > 1 else "data/example.h5"
exp = registry.get("linreg")
# defaults overridden like --set does (values are parsed and checked by the schema)
config = exp.schema.resolve({"t_max": 1.0, "lr": 0.05, "mc_samples": 300,
                             "eval_samples": 256, "records": 20})
exp.admit(config)  # the memory guard and cross-key checks the CLI applies
result = exp.run(config)
store.check_writable(out)
run_id = store.write_run(out, exp.name, dict(config), config["seed"], result.trajectories,
                         result.status, result.summary, result.extra, result.axes)

# read_run: (run id, run attributes, {trajectory name: Trajectory}); the newest run by default
run_id, attrs, trajectories = store.read_run(out, run_id)
print(f"{run_id}: {attrs['status']}")
for name, traj in trajectories.items():
    # t: (T,) gradient-flow time; loss: (T,); params: name -> (T, heads)
    print(f"{name}: {len(traj.t)} records up to t = {traj.t[-1]:g}, final loss "
          f"{traj.loss[-1]:.4f}, final mu {traj.params['mu'][-1].round(4).tolist()}")
