"""How many processes the launcher started: the one fact about the job that the recipe reads from its environment.

torchrun (``LOCAL_WORLD_SIZE`` / ``WORLD_SIZE``) and srun (``SLURM_NTASKS_PER_NODE`` / ``SLURM_NNODES``) say how
many ranks run on each node and how many nodes there are; Lightning checks its ``devices`` and ``num_nodes``
against exactly these. Reading them here lets one recipe run on 1 process or N×G without editing its sizes:
the executor decides the ranks, the recipe follows. Checked in the same order as Lightning's cluster
environments (torchrun first: it can run inside Slurm).
"""

import os
from typing import NamedTuple


class World(NamedTuple):
    ranks_per_node: int
    nodes: int

    @property
    def size(self) -> int:
        return self.ranks_per_node * self.nodes


def launcher_world(env=os.environ) -> World:
    """The ranks the launcher started: ``World(1, 1)`` for a plain ``python`` process."""
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:  # torchrun / torch.distributed.run
        per_node = int(env["LOCAL_WORLD_SIZE"])
        return World(per_node, max(1, int(env["WORLD_SIZE"]) // per_node))
    if "SLURM_STEP_ID" in env and "SLURM_NTASKS" in env and "SLURM_NNODES" in env:  # a task of an srun step
        nodes = int(env["SLURM_NNODES"])
        per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]  # "2(x3)" on uneven allocations
        return World(int(per_node) if per_node.isdigit() else int(env["SLURM_NTASKS"]) // nodes, nodes)
    return World(1, 1)
