"""The peer benchmark's parts; `benchmarks/peer.py` is its command line and the only entry point.

`cases`: the model cases and where their models are. `servers`: the compared servers (start, pin, stop) and what
the service reports about itself. `procstat`: CPU time, CPU wait and memory of process trees, from /proc. `load`:
one case, cell by cell, driven by the one load generator (`benchmarks/loadgen.py`), with the ceilings around each
server. `answers`: the naive servers' and the service's answers compared. `report`: the tables, the plots and
the machine the run was on.

These modules import `app` and `model_repository` from the repository root and `loadgen`, `inputs` and
`ceiling` from benchmarks/ as top-level modules: `benchmarks/peer.py` puts both folders on `sys.path` first.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
