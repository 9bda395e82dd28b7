"""Unit tests for fedgrpo.data.partition: every role (eval, aux, pool, public, client shards) is
disjoint by id and by text, has exactly the requested size, is deterministic per seed and stable
when later blocks grow; the domain / iid / dirichlet client partitions; the server's view of the
pool with and without gold answers; and ConfigErrors for an exhausted item space and empty
clients."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter

import numpy as np
import pytest

from fedgrpo.config import DataConfig
from fedgrpo.data.partition import (
    Splits,
    build_splits,
    client_allocation,
    expert_ids,
)
from fedgrpo.data.tasks import Question
from fedgrpo.errors import ConfigError

DOMAINS = ("arithmetic", "spelling")


def make_spec(**overrides) -> DataConfig:
    base = dict(
        domains=DOMAINS,
        difficulty=0,
        data_seed=0,
        pool_size=40,
        aux_size=8,
        public_size=20,
        eval_size=10,
        val_size=10,
        client_size=15,
        num_clients=2,
        partition="domain",
        dirichlet_beta=0.1,
    )
    base.update(overrides)
    return DataConfig(**base)


def all_questions(splits: Splits) -> dict[str, list[Question]]:
    roles = {
        "pool": list(splits.pool),
        "aux": list(splits.aux),
        "public": list(splits.public),
        "eval": [q for qs in splits.eval.values() for q in qs],
        "val": [q for qs in splits.val.values() for q in qs],
        "probe": list(splits.probe),
    }
    for shard in splits.clients:
        roles[shard.expert_id] = list(shard.questions)
    return roles


def ids(questions) -> list[str]:
    return [q.question_id for q in questions]


@pytest.fixture(scope="module")
def splits() -> Splits:
    return build_splits(make_spec())


# --- disjointness and sizes ---------------------------------------------------------------------


def test_roles_are_pairwise_disjoint_by_id_and_by_text(splits):
    roles = all_questions(splits)
    for (name_a, qs_a), (name_b, qs_b) in itertools.combinations(roles.items(), 2):
        assert not set(ids(qs_a)) & set(ids(qs_b)), (name_a, name_b)
        assert not {q.question for q in qs_a} & {q.question for q in qs_b}, (name_a, name_b)


def test_no_question_repeats_inside_a_role(splits):
    for name, qs in all_questions(splits).items():
        assert len(set(ids(qs))) == len(qs), name


def test_all_question_ids_matches_the_roles(splits):
    assert splits.all_question_ids() == {k: ids(v) for k, v in all_questions(splits).items()}


def test_sizes_are_exactly_as_requested(splits):
    spec = make_spec()
    assert len(splits.pool) == spec.pool_size
    assert len(splits.aux) == spec.aux_size
    # public_size and eval_size are per domain.
    assert len(splits.public) == spec.public_size * len(DOMAINS)
    assert set(splits.eval) == set(DOMAINS)
    for domain, qs in splits.eval.items():
        assert len(qs) == spec.eval_size
        assert {q.domain for q in qs} == {domain}
    assert [s.expert_id for s in splits.clients] == list(expert_ids(spec.num_clients))
    for shard in splits.clients:
        assert len(shard.questions) == spec.client_size


def test_aux_and_pool_are_split_evenly_across_domains(splits):
    assert Counter(q.domain for q in splits.pool) == {"arithmetic": 20, "spelling": 20}
    assert Counter(q.domain for q in splits.aux) == {"arithmetic": 4, "spelling": 4}
    assert Counter(q.domain for q in splits.public) == {"arithmetic": 20, "spelling": 20}


def test_uneven_totals_give_the_extra_item_to_the_first_domains():
    splits = build_splits(make_spec(pool_size=41, aux_size=7))
    assert Counter(q.domain for q in splits.pool) == {"arithmetic": 21, "spelling": 20}
    assert Counter(q.domain for q in splits.aux) == {"arithmetic": 4, "spelling": 3}


def test_every_item_carries_its_gold_answer(splits):
    for name, qs in all_questions(splits).items():
        assert all(q.answer for q in qs), name


def test_training_roles_interleave_domains(splits):
    # Consumers must not see one domain then the other: the pool is shuffled across domains.
    first_half = {q.domain for q in splits.pool[: len(splits.pool) // 2]}
    assert first_half == set(DOMAINS)


# --- determinism and stability ------------------------------------------------------------------


def test_two_builds_give_identical_ids_in_order(splits):
    again = build_splits(make_spec())
    assert again.all_question_ids() == splits.all_question_ids()
    assert again == splits


def test_another_data_seed_gives_other_splits(splits):
    other = build_splits(make_spec(data_seed=1))
    for role, role_ids in splits.all_question_ids().items():
        assert other.all_question_ids()[role] != role_ids, role


def test_another_data_seed_draws_other_eval_items(splits):
    other = build_splits(make_spec(data_seed=1))
    for domain in DOMAINS:
        shared = set(ids(splits.eval[domain])) & set(ids(other.eval[domain]))
        # 10 of thousands of items each: independent seeds almost never share more than one or two.
        assert len(shared) <= 3, domain


def test_growing_client_shards_keeps_the_eval_set_in_order_and_every_other_role_as_a_set(splits):
    grown = build_splits(make_spec(client_size=30))
    assert grown.eval == splits.eval
    for role in ("pool", "aux", "public"):
        assert set(ids(getattr(grown, role))) == set(ids(getattr(splits, role))), role
    # The old client items are the start of the new, larger shards.
    for old, new in zip(splits.clients, grown.clients):
        assert set(ids(old.questions)) < set(ids(new.questions))


def test_growing_client_shards_keeps_pool_aux_and_public_in_order(splits):
    # The module promises that growing a later split never changes an earlier one; the pool's order
    # is the server's training order, so a reorder changes training.
    grown = build_splits(make_spec(client_size=30))
    for role in ("pool", "aux", "public"):
        assert ids(getattr(grown, role)) == ids(getattr(splits, role)), role


def test_growing_the_pool_keeps_eval_and_aux(splits):
    grown = build_splits(make_spec(pool_size=60))
    assert grown.eval == splits.eval
    assert set(ids(grown.aux)) == set(ids(splits.aux))


# --- client partitions --------------------------------------------------------------------------


def test_domain_partition_gives_each_client_only_its_own_domain(splits):
    assert [shard.domain_counts() for shard in splits.clients] == [
        {"arithmetic": 15},
        {"spelling": 15},
    ]
    assert [shard.main_domain for shard in splits.clients] == list(DOMAINS)


def test_domain_partition_with_more_clients_than_domains_cycles_domains_with_distinct_items():
    splits = build_splits(make_spec(num_clients=4, client_size=5))
    assert [s.main_domain for s in splits.clients] == [*DOMAINS, *DOMAINS]
    # Two clients of one domain get different items, not copies.
    assert not set(ids(splits.clients[0].questions)) & set(ids(splits.clients[2].questions))


def test_iid_partition_gives_each_client_every_domain_in_equal_share():
    splits = build_splits(make_spec(partition="iid", num_clients=3))
    for shard in splits.clients:
        counts = shard.domain_counts()
        assert set(counts) == set(DOMAINS)
        assert sum(counts.values()) == 15
        # 15 over 2 domains: 8 and 7, the first domain takes the extra item.
        assert counts == {"arithmetic": 8, "spelling": 7}


def test_dirichlet_shards_follow_the_allocation():
    spec = make_spec(partition="dirichlet", num_clients=3, dirichlet_beta=1.0, data_seed=3)
    alloc = client_allocation(spec)
    assert alloc.sum(axis=1).min() > 0  # precondition: no client is empty under this seed
    splits = build_splits(spec)
    for row, shard in zip(alloc, splits.clients):
        expected = {d: int(n) for d, n in zip(DOMAINS, row) if n}
        assert shard.domain_counts() == expected


def test_dirichlet_client_with_no_items_raises_config_error():
    spec = make_spec(partition="dirichlet", num_clients=4, dirichlet_beta=0.01)
    # Precondition: with two domains and beta=0.01 each domain goes (almost) all to one client,
    # so at least two of four clients are empty.
    assert (client_allocation(spec).sum(axis=1) == 0).any()
    with pytest.raises(ConfigError) as info:
        build_splits(spec)
    assert "received no private items" in str(info.value)
    assert "raise dirichlet_beta" in str(info.value)


# --- client_allocation (cheap, no items generated) ----------------------------------------------


def _alloc_spec(**overrides) -> DataConfig:
    base = dict(domains=("a", "b", "c", "d"), num_clients=5, client_size=100)
    base.update(overrides)
    return make_spec(**base)


def test_domain_allocation_is_one_domain_per_client():
    alloc = client_allocation(_alloc_spec(partition="domain", num_clients=6))
    assert alloc.shape == (6, 4)
    for c, row in enumerate(alloc):
        assert row.tolist() == [100 if d == c % 4 else 0 for d in range(4)]


def test_iid_allocation_rows_are_even_shares():
    alloc = client_allocation(_alloc_spec(partition="iid", client_size=10))
    assert all(row.tolist() == [3, 3, 2, 2] for row in alloc)


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 100.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dirichlet_allocation_totals_are_exact(beta, seed):
    spec = _alloc_spec(partition="dirichlet", dirichlet_beta=beta, data_seed=seed)
    alloc = client_allocation(spec)
    assert alloc.shape == (5, 4)
    assert (alloc >= 0).all()
    assert alloc.sum() == spec.client_size * spec.num_clients
    # Each domain supplies an even share of all client items.
    assert alloc.sum(axis=0).tolist() == [125, 125, 125, 125]


def test_dirichlet_allocation_is_deterministic_per_seed():
    spec = _alloc_spec(partition="dirichlet", dirichlet_beta=0.5)
    assert np.array_equal(client_allocation(spec), client_allocation(spec))
    other = client_allocation(dataclasses.replace(spec, data_seed=1))
    assert not np.array_equal(client_allocation(spec), other)


def _mean_top_share(beta: float) -> float:
    """Mean over seeds and domains of the share of a domain held by its largest client."""
    shares = []
    for seed in range(10):
        spec = _alloc_spec(partition="dirichlet", dirichlet_beta=beta, data_seed=seed)
        alloc = client_allocation(spec)
        shares.extend(alloc.max(axis=0) / alloc.sum(axis=0))
    return float(np.mean(shares))


def test_small_dirichlet_beta_concentrates_each_domain_on_few_clients():
    # beta -> 0 gives near one-hot domain columns; beta -> inf gives an even 1/5 per client.
    assert _mean_top_share(0.01) > 0.9
    assert _mean_top_share(100.0) < 0.3


def test_unknown_partition_raises_config_error():
    with pytest.raises(ConfigError) as info:
        client_allocation(_alloc_spec(partition="random"))
    assert "use one of domain, dirichlet, iid" in str(info.value)


# --- the server's view --------------------------------------------------------------------------


def test_server_training_pool_withholds_answers_unless_ground_truth_is_on(splits):
    hidden = splits.server_training_pool(False)
    assert ids(hidden) == ids(splits.pool)
    assert all(q.answer is None for q in hidden)
    shown = splits.server_training_pool(True)
    assert shown == splits.pool
    assert all(q.answer for q in shown)
    # Withholding makes copies: the splits themselves keep their answers.
    assert all(q.answer for q in splits.pool)


# --- exhausted item spaces ----------------------------------------------------------------------


@pytest.fixture
def hundred_items(monkeypatch):
    """A domain with exactly 100 distinct questions: a one-digit number times 0..9."""
    from fedgrpo.data import gym
    from fedgrpo.data.gym import DomainSpec, GeneratorSpec

    level = dict(min_digits=1, max_digits=1, min_multiplier=0, max_multiplier=9)
    monkeypatch.setitem(gym.DOMAINS, "hundred", DomainSpec("hundred", "test", (
        GeneratorSpec("multiplication", (level,) * 3),)))
    return "hundred"


def test_requesting_more_items_than_a_domain_has_raises_config_error(hundred_items):
    spec = make_spec(
        domains=(hundred_items,), pool_size=10, aux_size=2, public_size=50, eval_size=40,
        client_size=5, num_clients=1,
    )
    with pytest.raises(ConfigError) as info:
        build_splits(spec)
    message = str(info.value)
    assert "'hundred'" in message
    assert "too few distinct questions" in message
    assert "lower eval_size" in message


def test_a_request_that_just_fits_a_small_item_space_succeeds(hundred_items):
    spec = make_spec(
        domains=(hundred_items,), pool_size=10, aux_size=2, public_size=40, eval_size=40,
        client_size=5, num_clients=1, val_size=3, probe_size=0,
    )
    splits = build_splits(spec)  # 40 + 2 + 10 + 40 + 5 + 3 = 100 of the 100 items
    assert sum(len(v) for v in splits.all_question_ids().values()) == 100


def test_domains_sharing_a_generator_never_repeat_a_question_text():
    splits = build_splits(
        make_spec(
            domains=("spelling", "rg:spell_backward"), pool_size=400, aux_size=8, public_size=200,
            eval_size=200, client_size=200,
        )
    )
    texts = Counter(q.question for qs in all_questions(splits).values() for q in qs)
    assert [t for t, n in texts.items() if n > 1] == []



def test_scoring_store_adds_the_pool_questions_of_the_clients_domain_with_answers(splits):
    shard = splits.clients[0]
    assert splits.scoring_store(shard, False) == shard.questions
    store = splits.scoring_store(shard, True)
    extra = store[len(shard.questions):]
    assert store[:len(shard.questions)] == shard.questions
    assert extra and {q.domain for q in extra} == {shard.main_domain}
    # The pool's questions of its domain, and the probes of its domain (see the probes' test below).
    assert set(ids(extra)) == {q.question_id for q in splits.pool + splits.probe if q.domain == shard.main_domain}
    assert all(q.answer is not None for q in extra)


def test_validation_and_test_splits_are_disjoint_and_adding_validation_moves_no_other_split():
    with_val = build_splits(make_spec(val_size=30))
    without = build_splits(make_spec(val_size=0))
    for domain in DOMAINS:
        assert len(with_val.val[domain]) == 30
        assert not set(ids(with_val.val[domain])) & set(ids(q for qs in with_val.eval.values() for q in qs))
    # The probes, cut after validation, are the one split that moves with it.
    everything_else = {k: v for k, v in with_val.all_question_ids().items() if k not in ("val", "probe")}
    assert everything_else == {k: v for k, v in without.all_question_ids().items() if k not in ("val", "probe")}
    assert without.val == {}


def test_every_split_is_drawn_from_the_same_items():
    """The stream yields frequent texts first; cut in stream order, the first split (test) and the last
    (validation) differed in distribution. From the shuffled reservoir they do not: the mean question
    length of test and validation agree within sampling noise, where the stream's first and last
    blocks do not."""
    import itertools
    import statistics

    from fedgrpo.data.gym import check_domains, iter_unique_questions

    spec = make_spec(domains=("arithmetic",), eval_size=600, val_size=600, public_size=4000, client_size=1000,
                     num_clients=1, pool_size=500, aux_size=25)
    splits = build_splits(spec)

    def mean_length(items):
        return statistics.fmean(len(q.question) for q in items)

    test, val = splits.eval["arithmetic"], splits.val["arithmetic"]
    noise = statistics.stdev(len(q.question) for q in test) / math.sqrt(len(test))
    assert abs(mean_length(test) - mean_length(val)) < 4 * noise
    raw = list(itertools.islice(iter_unique_questions(check_domains(("arithmetic",), 0)[0], 0, 0), 6725))
    assert abs(mean_length(raw[:600]) - mean_length(raw[-600:])) > 6 * noise  # what the stream order did


# --- the re-check's probes ------------------------------------------------------------------------


def test_probes_are_disjoint_from_every_split_and_cut_after_them_all():
    with_probes = build_splits(make_spec(probe_size=30))
    without = build_splits(make_spec(probe_size=0))
    assert len(with_probes.probe) == 30 * len(DOMAINS) and without.probe == ()
    assert Counter(q.domain for q in with_probes.probe) == {d: 30 for d in DOMAINS}
    # Reserving probes moves no other split: every role keeps its items, in order.
    others = {k: v for k, v in with_probes.all_question_ids().items() if k != "probe"}
    assert others == {k: v for k, v in without.all_question_ids().items() if k != "probe"}
    # Disjoint by id and by text from every role, the auxiliary set and the public pool included:
    # no expert has seen a probe, at calibration or anywhere else.
    probe_ids, probe_texts = set(ids(with_probes.probe)), {q.question for q in with_probes.probe}
    for role, questions in all_questions(with_probes).items():
        if role != "probe":
            assert not probe_ids & set(ids(questions)) and not probe_texts & {q.question for q in questions}, role
    assert all(q.answer is not None for q in with_probes.probe)  # the server keeps their answers


def test_a_probe_sample_is_the_share_of_the_training_questions_per_domain():
    splits = build_splits(make_spec(probe_size=30))
    assert splits.probe_sample(0.0) == ()
    sample = splits.probe_sample(0.2)  # 20 pool items per domain: ceil(0.2 * 20 / 0.8) = 5 probes each
    assert Counter(q.domain for q in sample) == {d: 5 for d in DOMAINS}
    assert all(q in splits.probe for q in sample) and sample == splits.probe_sample(0.2)  # deterministic
    assert len(splits.probe_sample(0.5)) == 2 * 20  # half of the training questions: as many as the pool


def test_too_few_probes_for_the_share_is_a_config_error_naming_the_fix():
    with pytest.raises(ConfigError, match="raise probe_size .* or lower probe_share"):
        build_splits(make_spec(probe_size=3)).probe_sample(0.2)


def test_a_client_holding_the_pools_answers_holds_the_probes_of_its_domain_too():
    # Else every question of its domain it does not hold would be a probe.
    splits = build_splits(make_spec(probe_size=10))
    shard = splits.clients[0]
    store = {q.question_id for q in splits.scoring_store(shard, True)}
    assert {q.question_id for q in splits.probe if q.domain == shard.main_domain} <= store
    assert not {q.question_id for q in splits.probe if q.domain != shard.main_domain} & store
    assert not set(ids(splits.probe)) & {q.question_id for q in splits.scoring_store(shard, False)}
