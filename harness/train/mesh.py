"""The device mesh of a training run and where its groups sit.

One torch DeviceMesh with the dimensions of `harness.perf.layout.MESH_DIMS`, outermost first:
pp, dp_replicate, dp_shard, cp, tp, so TP groups are neighbouring (node-local) ranks and PP
groups the farthest apart, as in torchtitan and Megatron-LM. The rank arithmetic is
perf.layout's (`mesh_coords`, `rank_groups`); this module only builds torch's mesh on it and
names the sub-meshes each parallelism uses:

- tp: tensor parallelism; cp: context parallelism; pp: the pipeline's point-to-point group;
- fsdp: what FSDP2 shards over, dp_shard × cp flattened (CP ranks hold the same weights and see
  different tokens, so their gradients are averaged like data-parallel ones, as torchtitan
  does), with dp_replicate as a second, outer dimension for HSDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from harness.dist import compress_hostlist
from harness.perf.layout import MESH_DIMS, Layout, mesh_coords, mesh_shape, rank_groups


@dataclass
class ParallelDims:
    """A resolved layout on this rank: the mesh, its sub-meshes and this rank's coordinates."""

    layout: Layout
    mesh: DeviceMesh
    """pp × dp_replicate × dp_shard × cp × tp."""
    dense: DeviceMesh
    """The same ranks seen by the weights: pp × dp_replicate × dp_shard_cp × tp (CP ranks hold
    the same weights, so FSDP shards over dp_shard and cp together)."""
    rank: int

    @cached_property
    def coords(self) -> dict[str, int]:
        return mesh_coords(self.rank, self.layout)

    @property
    def dp_rank(self) -> int:
        """This rank's index among the data-parallel ranks (its slice of the global batch)."""
        return self.coords["dp_replicate"] * self.layout.dp_shard + self.coords["dp_shard"]

    @property
    def tp_mesh(self) -> DeviceMesh:
        return self.dense["tp"]

    @property
    def cp_group(self) -> Any:
        return self.mesh["cp"].get_group()

    @property
    def pp_group(self) -> Any:
        return self.mesh["pp"].get_group()

    @cached_property
    def fsdp_mesh(self) -> DeviceMesh:
        """dp_shard × cp flattened, with dp_replicate outside it for HSDP."""
        if self.layout.dp_replicate > 1:
            return self.dense["dp_replicate", "dp_shard_cp"]
        return self.dense["dp_shard_cp"]


def build_mesh(layout: Layout, device_type: str, rank: int) -> ParallelDims:
    """The mesh of a resolved layout over the whole world (every rank calls it)."""
    names, sizes = zip(*mesh_shape(layout), strict=True)
    # Two views of one world mesh, as torchtitan builds them (slicing a flattened dimension out of
    # a root mesh is deprecated): both order the ranks alike, so their groups agree.
    world = init_device_mesh(device_type, (layout.world_size,), mesh_dim_names=("world",))
    mesh = world._unflatten(0, tuple(sizes), tuple(names))
    dense = world._unflatten(0, (layout.pp, layout.dp_replicate, layout.dp_shard * layout.cp, layout.tp),
                             ("pp", "dp_replicate", "dp_shard_cp", "tp"))  # fmt: skip
    dims = ParallelDims(layout, mesh, dense, rank)
    found = mesh.get_coordinate()
    expected = [dims.coords[name] for name in MESH_DIMS]
    if found is not None and list(found) != expected:  # torch's mesh and perf.layout must agree
        raise RuntimeError(f"rank {rank}: torch's mesh puts it at {found}, perf.layout at {expected}")
    return dims


def mesh_record(layout: Layout, hosts: list[str], *, limit: int = 64) -> dict[str, Any]:
    """The mesh for the manifest: its dimensions, and for each dimension of size > 1 how many
    groups it has, how many of them span more than one host, and the first `limit` groups with
    their ranks and hosts (the manifest stays small at 10,000 ranks); `tp_within_node` says
    whether every TP group stays on one host. `hosts[r]` is rank r's host."""
    groups = rank_groups(layout)
    record: dict[str, Any] = {"dims": dict(mesh_shape(layout)), "order": "outermost first", "groups": {}}
    for name, size in mesh_shape(layout):
        if size > 1:
            spans = [{"ranks": g, "hosts": compress_hostlist([hosts[r] for r in g])} for g in groups[name]]
            record["groups"][name] = spans[:limit]
            record[f"{name}_groups"] = len(spans)
            record[f"{name}_groups_across_hosts"] = sum(1 for g in groups[name] if len({hosts[r] for r in g}) > 1)
    record["tp_within_node"] = all(len({hosts[r] for r in g}) == 1 for g in groups["tp"])
    return record
