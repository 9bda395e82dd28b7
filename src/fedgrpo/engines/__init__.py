"""The composition root: which transport a run talks through, and every process FedGRPO starts.

Above `training` (it hands the pipeline a transport) and below `apps` and `cli`. Nothing else in
the package builds a transport, launches Flower or starts a process.

- `run`: a FedGRPO run in named phases on any engine; `switch`: `run_engine`, the engine switch;
- `experts`: experts built from the config (the embedded engine, Simulation's virtual SuperNodes,
  a site's expert service);
- `flower_app`: the ServerApp and ClientApp factories (`fedgrpo.apps` holds the two objects);
- `simulation`, `deployment`, `local_deployment`: Flower Simulation in this process, `flwr run` on a
  SuperLink, a whole loopback deployment (`fedgrpo up`);
- `supernode`, `clientapp_worker`, `expert_service`: a site's processes;
- `flower_patches`: every change to Flower's own code, each guarded;
- `environment`: process set-up (offline, quiet).
"""
