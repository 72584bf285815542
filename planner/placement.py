"""Where a fleet's replicas go: whole nodes and scale-up domains, the placement rule of `planner fleet`.

A cluster comes in nodes of n = gpus_per_node GPUs (an HGX server, or a GB200/GB300 NVL72 compute tray) and
scale-up domains of D = scaleup_domain_gpus GPUs. Where a domain holds several whole nodes (an NVL72 rack: 18
trays) the domain is a unit of placement too; elsewhere (HGX: D = n; L40S: D = 1) the node is the largest unit.
U = D when D is a multiple of n above it, else U = n. The rule:

- **small**: a replica of g <= n GPUs sits inside one node; several small replicas share a node while their GPUs
  fit in it (g1 + g2 + ... <= n);
- **block**: a replica of n < g <= U GPUs (only where U > n) takes ceil(g / n) whole nodes inside one domain, so
  that it talks over NVLink as the cost model assumes of a replica that fits one domain;
- **whole**: a replica of g > U GPUs takes ceil(g / U) whole units: whole nodes on HGX and L40S servers, whole
  racks on NVL72.

A disaggregated deployment unit (x prefill + y decode workers) is placed as one replica of all its GPUs: the cost
model moved its KV cache over the scale-up fabric exactly when the unit fits one domain. The inventory is whole
nodes; its domains are the full ones and, when the node count is not a multiple of the domain, one partial domain
of the rest. Cost counts whole nodes: a node holding any replica is paid in full.

The rule is monotone: a replica of fewer GPUs fits wherever one of more GPUs was (in its node slot, in one of its
nodes, in one of its domains), which is what makes the fleet's Pareto reduction of options exact
(planner.fleetoptions). This module holds the rule (`NodeRule`), the node and domain patterns the CP-SAT model
counts (`patterns`), an exact packer for the exhaustive oracle (`fits`, `min_nodes`), the first-fit placement of
the greedy baseline (`FirstFit`) and the explicit placement of a solution with its check (`place`,
`check_placement`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from planner.specs import ClusterSpec

Kind = Literal["small", "block", "whole"]
"""How a replica is placed: inside one node, over whole nodes of one domain, or over whole units."""


@dataclass(frozen=True)
class NodeRule:
    """The placement rule on one GPU type of an inventory: its node, its domain and how many nodes there are."""

    cluster: str
    node_gpus: int  # n [GPUs per node]
    domain_nodes: int  # nodes of one domain that is a unit of placement (1: the node is the largest unit)
    nodes: int  # nodes of the inventory

    @classmethod
    def of(cls, cluster: ClusterSpec, gpus: int) -> NodeRule:
        """The rule of `gpus` GPUs (a whole number of nodes) of a cluster."""
        n, d = cluster.gpus_per_node, cluster.scaleup_domain_gpus
        domain_nodes = d // n if d > n and d % n == 0 else 1
        return cls(cluster.name, n, domain_nodes, gpus // n)

    @property
    def unit_gpus(self) -> int:
        """U: GPUs of the largest unit of placement (a domain of several nodes, else a node) [GPUs]."""
        return self.node_gpus * self.domain_nodes

    @property
    def gpus(self) -> int:
        """GPUs of the inventory [GPUs]."""
        return self.nodes * self.node_gpus

    @property
    def domains(self) -> list[int]:
        """Capacities of the inventory's domains [nodes]: the full ones, then a partial one of the rest."""
        full, rest = divmod(self.nodes, self.domain_nodes)
        return [self.domain_nodes] * full + ([rest] if rest else [])

    def kind(self, g: int) -> Kind:
        """How a replica of g GPUs is placed."""
        if g <= self.node_gpus:
            return "small"
        return "block" if g <= self.unit_gpus else "whole"

    def items(self, g: int) -> list[int]:
        """The domain-level pieces of a replica of g GPUs [nodes each]: none for a small one, one block of
        ceil(g / n) nodes, or ceil(g / U) whole units of domain_nodes nodes."""
        kind = self.kind(g)
        if kind == "small":
            return []
        if kind == "block":
            return [-(-g // self.node_gpus)]
        return [self.domain_nodes] * -(-g // self.unit_gpus)

    def nodes_of(self, g: int) -> int:
        """Nodes a replica of g GPUs occupies on its own (0 for a small one: it shares a node) [nodes]."""
        return sum(self.items(g))

    def copies(self, small: int, big: int) -> int:
        """How many replicas of `small` GPUs fit in the place one replica of `big` GPUs occupies (its node slot,
        its block's nodes, its whole units) under the rule [replicas]."""
        n, kind_big, kind_small = self.node_gpus, self.kind(big), self.kind(small)
        if kind_big == "small":
            return big // small if kind_small == "small" else 0
        nodes = self.nodes_of(big)  # a block's nodes, or whole units' nodes
        if kind_small == "small":
            return nodes * (n // small)
        if kind_small == "block":
            k = self.items(small)[0]
            per = self.domain_nodes // k if kind_big == "whole" else nodes // k
            return per * (len(self.items(big)) if kind_big == "whole" else 1)
        return len(self.items(big)) // len(self.items(small)) if kind_big == "whole" else 0

    def most(self, g: int) -> int:
        """The most replicas of g GPUs the inventory holds, alone [replicas]."""
        if self.kind(g) == "small":
            return self.nodes * (self.node_gpus // g)
        pieces = self.items(g)
        per = sum(c // pieces[0] for c in self.domains)  # pieces of one replica are all the same size
        return per // len(pieces)


# --- patterns: what one node or one domain can hold ---------------------------------------------------------


def patterns(sizes: Sequence[int], capacity: int) -> list[tuple[int, ...]]:
    """The maximal multisets of `sizes` whose sum is at most `capacity`, each as counts per size in the order
    given: a node's (or a domain's) possible contents, up to what could still be added. Any content of one node
    is a sub-multiset of one of them."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    smallest = min(sizes) if len(sizes) else capacity + 1
    out: list[tuple[int, ...]] = []
    counts = [0] * len(sizes)

    def go(j: int, room: int) -> None:
        if j == len(order):
            if room < smallest and any(counts):  # maximal: nothing more fits
                out.append(tuple(counts))
            return
        i = order[j]
        for c in range(room // sizes[i], -1, -1):
            counts[i] = c
            go(j + 1, room - c * sizes[i])
        counts[i] = 0

    if len(sizes):
        go(0, capacity)
    return out


# --- the exact packer (the exhaustive oracle's) --------------------------------------------------------------


def pack(items: Sequence[int], bins: Sequence[int]) -> list[list[int]] | None:
    """Items of these sizes packed into bins of these capacities, exactly (depth-first search, largest item
    first, bins of equal room tried once): the indices of the items in each bin, or None when they do not fit."""
    order = sorted(range(len(items)), key=lambda i: -items[i])
    if sum(items) > sum(bins):
        return None
    failed: set[tuple[int, tuple[int, ...]]] = set()
    rooms = list(bins)
    where = [0] * len(items)

    def go(k: int) -> bool:
        if k == len(order):
            return True
        state = (k, tuple(sorted(rooms)))
        if state in failed:
            return False
        s = items[order[k]]
        tried = set()
        for b, r in enumerate(rooms):
            if r >= s and r not in tried:
                tried.add(r)
                rooms[b] -= s
                where[order[k]] = b
                if go(k + 1):
                    return True
                rooms[b] += s
        failed.add(state)
        return False

    if not go(0):
        return None
    out: list[list[int]] = [[] for _ in bins]
    for i, b in enumerate(where):
        out[b].append(i)
    return out


def fits(items: Sequence[int], bins: Sequence[int]) -> bool:
    """Whether items of these sizes pack into bins of these capacities (exact: `pack`)."""
    return pack(items, bins) is not None


def min_bins(items: Sequence[int], capacity: int) -> int:
    """The fewest bins of `capacity` holding items of these sizes (each at most the capacity) [bins]."""
    if not items:
        return 0
    b = -(-sum(items) // capacity)
    while not fits(items, [capacity] * b):
        b += 1
    return b


def place_exact(rule: NodeRule, replicas: Sequence[tuple[str, int]]) -> list[list[tuple[int, list[str]]]] | None:
    """An explicit placement of replicas (label, GPUs) under the rule on the fewest nodes, by exact packing (the
    exhaustive oracle's): the domain-level pieces packed into the inventory's domains, the small replicas into
    the fewest nodes, those nodes put on free nodes of the domains. Per domain its groups [(nodes, labels)];
    None when the replicas do not fit the inventory."""
    domains: list[list[tuple[int, list[str]]]] = [[] for _ in rule.domains]
    pieces = [(label, k) for label, g in replicas for k in rule.items(g)]
    if pieces:
        into = pack([k for _, k in pieces], rule.domains)
        if into is None:
            return None
        for d, idx in enumerate(into):
            domains[d] += [(pieces[i][1], [pieces[i][0]]) for i in idx]
    small = [(label, g) for label, g in replicas if rule.kind(g) == "small"]
    if small:
        sizes = [g for _, g in small]
        nodes = pack(sizes, [rule.node_gpus] * min_bins(sizes, rule.node_gpus)) or []
        free = [c - sum(n for n, _ in groups) for c, groups in zip(rule.domains, domains)]
        for idx in nodes:
            d = next((d for d, f in enumerate(free) if f > 0), None)
            if d is None:
                return None
            free[d] -= 1
            domains[d].append((1, [small[i][0] for i in idx]))
    return domains


def min_nodes(rule: NodeRule, replica_gpus: Sequence[int]) -> int | None:
    """The fewest nodes holding replicas of these sizes [GPUs each] under the rule, by exact packing; None when
    they do not fit the inventory (its nodes, its domains)."""
    placed = place_exact(rule, [("", g) for g in replica_gpus])
    return None if placed is None else sum(n for groups in placed for n, _ in groups)


# --- the greedy baseline's placement ---------------------------------------------------------------------------


@dataclass
class FirstFit:
    """Replicas placed one at a time, first fit: a small replica in the first open node with room, else in a new
    node (taken from the first domain with a free node); a block or whole replica on the free nodes of the first
    domains that hold it."""

    rule: NodeRule
    node_free: list[int] = field(default_factory=list)  # free GPUs of each open small node
    domain_free: list[int] = field(default_factory=list)  # free nodes of each domain

    def __post_init__(self) -> None:
        self.domain_free = list(self.rule.domains)

    @property
    def nodes_used(self) -> int:
        """Nodes holding a replica [nodes]."""
        return self.rule.nodes - sum(self.domain_free)

    def add(self, g: int) -> bool:
        """Place one replica of g GPUs; False (and nothing placed) when it does not fit."""
        if self.rule.kind(g) == "small":
            for i, free in enumerate(self.node_free):
                if free >= g:
                    self.node_free[i] -= g
                    return True
            for d, free in enumerate(self.domain_free):
                if free:
                    self.domain_free[d] -= 1
                    self.node_free.append(self.rule.node_gpus - g)
                    return True
            return False
        trial = list(self.domain_free)
        for k in self.rule.items(g):
            d = next((d for d, free in enumerate(trial) if free >= k and (k < self.rule.domain_nodes or
                                                                          free == self.rule.domains[d])), None)
            if d is None:
                return False
            trial[d] -= k
        self.domain_free = trial
        return True


# --- the explicit placement of a solution, and its check --------------------------------------------------------


@dataclass(frozen=True)
class NodeGroup:
    """`count` identical groups of `nodes_each` nodes, each holding these replicas (labels)."""

    count: int
    nodes_each: int
    replicas: tuple[str, ...]


def place(rule: NodeRule, replicas: Sequence[tuple[str, int]], node_patterns: Sequence[tuple[tuple[int, ...], int]],
          small_sizes: Sequence[int], domain_patterns: Sequence[tuple[tuple[int, ...], int, int]],
          piece_sizes: Sequence[int]) -> list[list[tuple[int, list[str]]]]:
    """The explicit placement of a solution: `replicas` (label, GPUs) put into the slots of the chosen patterns
    (node patterns as (counts per small size, how many nodes), domain patterns as (counts per piece size, how many
    domains, domain capacity)). Returns per domain its groups [(nodes, labels on them)]. Raises ValueError when the
    slots do not hold the replicas (a bug of the model)."""
    small_slots: dict[int, list[list[str]]] = {s: [] for s in small_sizes}
    nodes: list[list[str]] = []
    for counts, times in node_patterns:
        for _ in range(times):
            node: list[str] = []
            nodes.append(node)
            for s, c in zip(small_sizes, counts):
                small_slots[s].extend([node] * c)
    domains: list[list[tuple[int, list[str]]]] = [[] for _ in rule.domains]
    caps = list(rule.domains)
    piece_slots: dict[int, list[list[tuple[int, list[str]]]]] = {k: [] for k in piece_sizes}
    free_domains = {cap: [d for d, c in enumerate(caps) if c == cap] for cap in set(caps)}
    for counts, times, cap in domain_patterns:
        for _ in range(times):
            if not free_domains.get(cap):
                raise ValueError(f"{rule.cluster}: more domain patterns of {cap} nodes than domains")
            d = free_domains[cap].pop()
            for k, c in zip(piece_sizes, counts):
                piece_slots[k].extend([domains[d]] * c)
    for label, g in sorted(replicas, key=lambda x: -x[1]):
        if rule.kind(g) == "small":
            if not small_slots[g]:
                raise ValueError(f"{rule.cluster}: no node slot left for {label}")
            small_slots[g].pop().append(label)
            continue
        for k in rule.items(g):
            if rule.domain_nodes == 1:  # no domain level: a piece is a node of its own
                d = next((d for d in range(len(domains)) if not domains[d]), None)
                if d is None:
                    raise ValueError(f"{rule.cluster}: more nodes used than the inventory holds")
                domains[d].append((k, [label]))
                continue
            if not piece_slots.get(k):
                raise ValueError(f"{rule.cluster}: no domain slot left for {label}")
            piece_slots[k].pop().append((k, [label]))
    for node in (x for x in nodes if x):  # small nodes go on free nodes of any domain
        d = next((d for d in range(len(domains)) if sum(n for n, _ in domains[d]) < caps[d]), None)
        if d is None:
            raise ValueError(f"{rule.cluster}: more nodes used than the inventory holds")
        domains[d].append((1, node))
    return domains


def check_placement(rule: NodeRule, domains: Sequence[Sequence[tuple[int, Sequence[str]]]],
                    sizes: dict[str, int]) -> list[str]:
    """What an explicit placement breaks (empty when none): more domains or nodes than the inventory, a domain over
    its capacity, a node holding more GPUs than it has, a block or whole replica on too few nodes. `sizes`:
    GPUs of each replica label."""
    out = []
    if len(domains) > len(rule.domains):
        out.append(f"{rule.cluster}: {len(domains)} domains used, {len(rule.domains)} in the inventory")
    for d, groups in enumerate(domains):
        used = sum(n for n, _ in groups)
        if d < len(rule.domains) and used > rule.domains[d]:
            out.append(f"{rule.cluster}: domain {d} holds {used} nodes of {rule.domains[d]}")
        for n, labels in groups:
            if len(labels) == 1 and rule.kind(sizes[labels[0]]) != "small":
                need = rule.items(sizes[labels[0]])[0]
                if n < need:
                    out.append(f"{rule.cluster}: {labels[0]} on {n} nodes, needs {need}")
                continue
            gpus = sum(sizes[x] for x in labels)
            if n != 1 or gpus > rule.node_gpus or any(rule.kind(sizes[x]) != "small" for x in labels):
                out.append(f"{rule.cluster}: a node holds {gpus} GPUs of {rule.node_gpus} ({', '.join(labels)})")
    return out


def groups_of(domains: Sequence[Sequence[tuple[int, Sequence[str]]]]) -> list[NodeGroup]:
    """The placement summarised: identical groups of nodes counted once, largest first."""
    seen = Counter((n, tuple(sorted(labels))) for groups in domains for n, labels in groups)
    return [NodeGroup(count=c, nodes_each=n, replicas=labels)
            for (n, labels), c in sorted(seen.items(), key=lambda x: (-x[0][0], -x[1], x[0][1]))]
