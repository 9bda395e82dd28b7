"""Deterministic, disjoint splits from one seed.

Every domain yields one seeded stream of distinct questions (:func:`iter_unique_questions`). Its
first 1024 x 2^k items (the smallest such reservoir that covers every split) are shuffled with a
seeded permutation and cut into consecutive blocks in a fixed order - test (evaluation), auxiliary,
server pool, public pre-training pool, client shards, validation, probes - so no question text can sit
in two roles, every split is a uniform draw from the same items (:func:`shuffled_reservoir` says why),
and growing a later split within the reservoir's tier never changes an earlier one (the test set stays
put when client shards grow; the probes, cut last, move nothing).

The probes (config `probe_size`) are the re-check's labelled items (`transport.recheck`): a run mixes
a share of them into the server's training questions (:meth:`Splits.probe_sample`), where an expert
meets them as it meets any question. Being a uniform draw from the pool's items, held by no one and in
no other role (not the auxiliary set, not the public pool), nothing about them tells them apart.

Client shards (non-IID by design, the paper's setting):
- ``domain``: client k holds domain k mod D (several clients of one domain share its items);
- ``dirichlet``: each domain's client items are spread over clients by q ~ Dir(beta * 1_K), the
  standard label-skew recipe (Hsu et al. 2019); small beta gives near one-domain clients;
- ``iid``: every client holds an equal share of every domain.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedgrpo.config import DataConfig, probe_count
from fedgrpo.data.files import Columns, load_questions
from fedgrpo.data.gym import check_domains, iter_unique_questions
from fedgrpo.data.tasks import Question
from fedgrpo.errors import ConfigError


@dataclass(frozen=True)
class ClientShard:
    expert_id: str
    questions: tuple[Question, ...]

    @property
    def main_domain(self) -> str:
        """The domain this client holds most of (ties: the first one met in its shard)."""
        return Counter(q.domain for q in self.questions).most_common(1)[0][0]

    def domain_counts(self) -> dict[str, int]:
        return dict(Counter(q.domain for q in self.questions))


@dataclass(frozen=True)
class Splits:
    """The roles of every generated question. All questions carry their gold answers here; who may
    see which answer is decided where a split is handed out (:meth:`server_training_pool`)."""

    pool: tuple[Question, ...]  # D_s, the server's training questions
    aux: tuple[Question, ...]  # D_p, the labelled auxiliary set
    public: tuple[Question, ...]  # labelled public pool for the server's pre-training
    clients: tuple[ClientShard, ...]  # each client's private data
    eval: dict[str, tuple[Question, ...]]  # held-out test items per domain: what tables report
    val: dict[str, tuple[Question, ...]] = field(default_factory=dict)  # validation items per domain: where choices are made
    probe: tuple[Question, ...] = ()  # the re-check's labelled probes, held by the server only (`probe_sample`)

    def server_training_pool(self, use_ground_truth: bool) -> tuple[Question, ...]:
        """D_s as the server's training path sees it: answers withheld unless ground truth is on."""
        return self.pool if use_ground_truth else tuple(q.without_answer() for q in self.pool)

    def scoring_store(self, shard: ClientShard, pool_answers: bool) -> tuple[Question, ...]:
        """What a client holds with answers when it scores: its private shard and, with
        `pool_answers` (config `pool_answers_at_clients`, the paper's Table 1), the training pool's
        questions of its main domain, answers included, and the probes of that domain too: a client
        holding every training question of its domain but no probe would know a question of its
        domain it does not hold for a probe. Its expert model is trained on the shard only."""
        if not pool_answers:
            return shard.questions
        return shard.questions + tuple(q for q in self.pool + self.probe if q.domain == shard.main_domain)

    def probe_sample(self, share: float) -> tuple[Question, ...]:
        """The probes a run mixes into the training pool so that they are `share` of its questions
        (`config.probe_count` per domain, the first of the domain's probes), answers included; none
        at 0. Too few probes for a domain: ConfigError naming the fix."""
        if share <= 0:
            return ()
        wanted = Counter(q.domain for q in self.pool)
        have = Counter(q.domain for q in self.probe)
        for domain, n in wanted.items():
            needed = probe_count(n, share)
            if have[domain] < needed:
                raise ConfigError(
                    f"probe_share {share:g} mixes {needed} probes of domain {domain!r} into its {n} training questions, "
                    f"but only {have[domain]} probe items of it exist: raise probe_size (or give probe_file more "
                    "rows of that domain) or lower probe_share")
        taken: Counter[str] = Counter()
        sample = []
        for q in self.probe:  # already interleaved across domains in a seeded order
            if taken[q.domain] < probe_count(wanted[q.domain], share):
                taken[q.domain] += 1
                sample.append(q)
        return tuple(sample)

    def all_question_ids(self) -> dict[str, list[str]]:
        roles = {
            "pool": [q.question_id for q in self.pool],
            "aux": [q.question_id for q in self.aux],
            "public": [q.question_id for q in self.public],
            "eval": [q.question_id for qs in self.eval.values() for q in qs],
            "val": [q.question_id for qs in self.val.values() for q in qs],
            "probe": [q.question_id for q in self.probe],
        }
        for shard in self.clients:
            roles[shard.expert_id] = [q.question_id for q in shard.questions]
        return roles


def expert_ids(num_clients: int) -> tuple[str, ...]:
    return tuple(f"client-{k}" for k in range(num_clients))


def _even_shares(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _largest_remainder(total: int, weights: np.ndarray) -> list[int]:
    raw = weights / weights.sum() * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def client_allocation(data: DataConfig) -> np.ndarray:
    """Items of each domain (columns) held by each client (rows); shape (num_clients, D)."""
    k, d = data.clients, len(data.domains)
    alloc = np.zeros((k, d), dtype=int)
    if data.partition == "domain":
        for domain in range(d):
            owners = [c for c in range(k) if c % d == domain]
            for c in owners:
                alloc[c, domain] = data.client_size
    elif data.partition == "iid":
        for c in range(k):
            alloc[c] = _even_shares(data.client_size, d)
    elif data.partition == "dirichlet":
        rng = np.random.default_rng([data.data_seed, *b"dirichlet"])
        per_domain = _even_shares(data.client_size * k, d)
        for domain in range(d):
            q = rng.dirichlet(np.full(k, data.dirichlet_beta))
            alloc[:, domain] = _largest_remainder(per_domain[domain], q)
    return alloc  # any other partition name is refused by the config


RESERVOIR_TIER = 1024  # a domain's reservoir holds 1024 x 2^k distinct items, the smallest that covers the splits


def reservoir_size(needed: int) -> int:
    """The reservoir that covers `needed` items: a power-of-two tier, so that growing a split within a
    tier changes no other split."""
    size = RESERVOIR_TIER
    while size < needed:
        size *= 2
    return size


def shuffled_reservoir(stream: Iterator[Question], needed: int, seed: list[int]) -> list[Question]:
    """The first `reservoir_size(needed)` items of a domain's stream (fewer if its item space runs out),
    in a seeded random order.

    Why a shuffled reservoir and not the stream's order: the stream yields each distinct text once, so
    in a small item space the frequent texts come first and the rare ones last; cutting splits from
    the raw order gave the test split (first) and the validation split (last) different distributions
    (arithmetic: base greedy pass@1 43.7 on one, 53.2 on the other). Shuffled, every split is a uniform
    draw from the same items."""
    reservoir = list(itertools.islice(stream, reservoir_size(needed)))
    order = np.random.default_rng([*seed, *b"reservoir"]).permutation(len(reservoir))
    return [reservoir[i] for i in order]


def check_data(data: DataConfig) -> None:
    """What the config cannot check without the data layer: the domain names (or, for files, nothing
    more than the config checked). The CLI runs it as it loads a config."""
    if not data.uses_files:
        check_domains(data.domains, data.difficulty)


def build_splits(data: DataConfig) -> Splits:
    """Every split of the data config `data`: from the user's files (`pool_file`) or generated (the
    model cache keys on the same settings). Deterministic: the same config gives the same ids in
    order. Unknown domains: ConfigError."""
    if data.uses_files:
        return build_file_splits(data)
    domains = check_domains(data.domains, data.difficulty)
    d = len(domains)
    alloc = client_allocation(data)
    aux_shares = _even_shares(data.aux_size, d)
    pool_shares = _even_shares(data.pool_size, d)

    pool: list[Question] = []
    aux: list[Question] = []
    public: list[Question] = []
    probes: list[Question] = []
    evals: dict[str, tuple[Question, ...]] = {}
    vals: dict[str, tuple[Question, ...]] = {}
    client_items: list[list[Question]] = [[] for _ in range(data.clients)]
    taken: set[str] = set()
    for col, domain in enumerate(domains):
        name = domain.name
        # Probes last: reserving them moves no other split (within the reservoir's tier).
        wanted = [data.eval_size, aux_shares[col], pool_shares[col], data.public_size, *alloc[:, col], data.val_size,
                  data.probe_size]
        # Two domains may share a generator (spelling and rg:spell_backward): skip texts already
        # placed by an earlier domain, so no text is ever in two roles.
        stream = (
            q for q in iter_unique_questions(domain, data.difficulty, data.data_seed)
            if q.question not in taken
        )
        reservoir = shuffled_reservoir(stream, sum(int(n) for n in wanted), [data.data_seed, *name.encode()])
        taken.update(q.question for q in reservoir)
        blocks, start = [], 0
        for size in wanted:
            block = reservoir[start:start + int(size)]
            start += int(size)
            if len(block) < size:
                raise ConfigError(
                    f"domain {name!r} at difficulty {data.difficulty} has too few distinct questions "
                    f"for the requested split sizes; lower eval_size, val_size, pool_size, public_size, "
                    f"client_size or probe_size, or raise `difficulty`"
                )
            blocks.append(block)
        evals[name] = tuple(blocks[0])
        aux += blocks[1]
        pool += blocks[2]
        public += blocks[3]
        for c, block in enumerate(blocks[4:-2]):
            client_items[c] += block
        if blocks[-2]:
            vals[name] = tuple(blocks[-2])
        probes += blocks[-1]

    for expert_id, items in zip(expert_ids(data.clients), client_items):
        if not items:
            raise ConfigError(
                f"{expert_id} received no private items (partition={data.partition}, "
                f"dirichlet_beta={data.dirichlet_beta}); raise dirichlet_beta or client_size, "
                "or change data_seed"
            )
    # Interleave domains in a seeded order so no consumer sees one domain after another. Each role
    # has its own generator, so resizing one role never reorders another.
    def shuffle(items: list[Question], role: str) -> tuple[Question, ...]:
        rng = np.random.default_rng([data.data_seed, *role.encode()])
        return tuple(items[i] for i in rng.permutation(len(items)))

    clients = tuple(
        ClientShard(expert_id, shuffle(items, expert_id))
        for expert_id, items in zip(expert_ids(data.clients), client_items)
    )
    return Splits(
        pool=shuffle(pool, "pool"), aux=shuffle(aux, "aux"), public=shuffle(public, "public"),
        clients=clients, eval=evals, val=vals, probe=shuffle(probes, "probe"),
    )


# --- splits from the user's files -------------------------------------------------------------------

def build_file_splits(data: DataConfig) -> Splits:
    """The user's files in their roles. No public pool (a local model needs no pre-training); clients
    from `client_files` (one each) or `client_data_file` split by `partition` over its domains."""
    columns = Columns.from_config(data)
    assert data.pool_file is not None and data.aux_file is not None  # the config checked them
    pool = load_questions(data.pool_file, columns, role="training pool", need_answer=data.use_ground_truth)
    aux = load_questions(data.aux_file, columns, role="auxiliary set", need_answer=True)
    evals = {name: tuple(load_questions(path, columns, role=f"evaluation set {name!r}", need_answer=True,
                                        default_domain=name))
             for name, path in data.eval_file_paths().items()}
    vals = {name: tuple(load_questions(path, columns, role=f"validation set {name!r}", need_answer=True,
                                       default_domain=name))
            for name, path in data.val_file_paths().items()}
    if data.val_fraction:
        evals, vals = hold_out(evals, data.val_fraction, data.data_seed)
    # Rows without a domain get the pool's fallback (its file's name), so probes match its domains.
    probes = (load_questions(data.probe_file, columns, role="probe set", need_answer=True,
                             default_domain=Path(data.pool_file).stem)
              if data.probe_file is not None else [])
    if data.client_files:
        shards = [load_questions(path, columns, role=f"client-{k} data", need_answer=True)
                  for k, path in enumerate(data.client_files)]
    else:
        assert data.client_data_file is not None
        shared = load_questions(data.client_data_file, columns, role="client data", need_answer=True)
        shards = split_among_clients(shared, data.clients, data.partition, data.dirichlet_beta, data.data_seed)
    for expert_id, shard in zip(expert_ids(data.clients), shards):
        if not shard:
            raise ConfigError(f"{expert_id} received no private items from the client data "
                              f"(partition={data.partition}); raise dirichlet_beta, use fewer clients or "
                              "give more data")
    clients = tuple(ClientShard(e, tuple(shard)) for e, shard in zip(expert_ids(data.clients), shards))
    # A probe in another role (an expert saw it at calibration or holds it) could be told apart.
    others: dict[str, Sequence[Question]] = {"training pool": pool, "auxiliary set": aux, **{
        f"evaluation set {n!r}": q for n, q in evals.items()}, **{f"validation set {n!r}": q for n, q in vals.items()},
        **{f"client-{k} data": shard for k, shard in enumerate(shards)}}
    for role, items in others.items():
        _check_disjoint({role: items, "probe set": probes})
    for name, items in vals.items():  # choices made on items trained or tested on would mean nothing
        _check_disjoint({"training pool": pool, f"validation set {name!r}": items})
        for test_name, tests in evals.items():
            _check_disjoint({f"evaluation set {test_name!r}": tests, f"validation set {name!r}": items})
    order = np.random.default_rng([data.data_seed, *b"probe"]).permutation(len(probes))
    return Splits(pool=tuple(pool), aux=tuple(aux), public=(), clients=clients, eval=evals, val=vals,
                  probe=tuple(probes[i] for i in order))


def hold_out(evals: dict[str, tuple[Question, ...]], fraction: float,
             seed: int) -> tuple[dict[str, tuple[Question, ...]], dict[str, tuple[Question, ...]]]:
    """(test, validation): a seeded share `fraction` of each evaluation set becomes its validation
    set (at least one item, and at least one left to test)."""
    tests, vals = {}, {}
    for name, items in evals.items():
        if len(items) < 2:
            raise ConfigError(f"evaluation set {name!r} has {len(items)} item(s): too few to hold out a validation "
                              "share; give val_files or more evaluation items")
        order = np.random.default_rng([seed, *name.encode(), *b"validation"]).permutation(len(items))
        k = min(len(items) - 1, max(1, round(fraction * len(items))))
        held = set(order[:k].tolist())
        vals[name] = tuple(q for i, q in enumerate(items) if i in held)
        tests[name] = tuple(q for i, q in enumerate(items) if i not in held)
    return tests, vals


def _check_disjoint(roles: dict[str, Sequence[Question]]) -> None:
    """A question (by text) in two of the server's roles from the user's files: one-line error."""
    seen: dict[str, str] = {}
    for role, items in roles.items():
        for q in items:
            key = " ".join(q.question.split()).lower()
            other = seen.setdefault(key, role)
            if other != role:
                raise ConfigError(f"the question {q.question[:60]!r} is in both the {other} and the {role}; "
                                  "each question may have one role (remove it from one file)")


def split_among_clients(items: list[Question], k: int, partition: str, beta: float,
                        seed: int) -> list[list[Question]]:
    """A labelled pool split among `k` clients over its domains, deterministically from `seed`:

    - ``domain``: each domain goes to one client (domain d to client d mod k) when there are more
      domains than clients, else to the clients c with c mod D = d, evenly;
    - ``iid``: every domain dealt evenly to all clients;
    - ``dirichlet``: each domain's items spread by q ~ Dir(beta * 1_k) (largest remainder).
    """
    by_domain: dict[str, list[Question]] = {}
    for q in items:
        by_domain.setdefault(q.domain, []).append(q)
    domains = sorted(by_domain)
    rng = np.random.default_rng([seed, *b"client-files"])
    shards: list[list[Question]] = [[] for _ in range(k)]
    for d, name in enumerate(domains):
        block = [by_domain[name][i] for i in rng.permutation(len(by_domain[name]))]
        if partition == "domain":
            owners = [c for c in range(k) if c % len(domains) == d] or [d % k]
            counts = np.zeros(k, dtype=int)
            counts[owners] = _even_shares(len(block), len(owners))
        elif partition == "iid":
            counts = np.array(_even_shares(len(block), k))
        else:
            counts = np.array(_largest_remainder(len(block), rng.dirichlet(np.full(k, beta))))
        start = 0
        for c, n in enumerate(counts):
            shards[c] += block[start:start + int(n)]
            start += int(n)
    return shards
