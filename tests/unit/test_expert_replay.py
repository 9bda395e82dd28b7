"""Expert fine-tuning with public replay (training.prepare.expert_training_items)."""

from __future__ import annotations

from collections import Counter

from fedgrpo.data.tasks import Question
from fedgrpo.training.prepare import expert_training_items


def _items(domain: str, n: int) -> tuple[Question, ...]:
    return tuple(Question(f"{domain}-{i}", domain, "g", f"{domain} question {i}", "1") for i in range(n))


def test_no_replay_is_the_private_shard_alone():
    shard = _items("own", 10)
    assert expert_training_items(shard, _items("public", 50), 0.0, seed=1) == shard


def test_replay_makes_up_its_share_of_the_data_from_every_public_domain_deterministically():
    shard = _items("own", 80)
    public = _items("a", 50) + _items("b", 50)
    items = expert_training_items(shard, public, 0.2, seed=3)
    assert items[:80] == shard  # the private shard, whole
    counts = Counter(q.domain for q in items[80:])
    assert sum(counts.values()) == 20  # 20 of 100 = the 0.2 share
    assert set(counts) == {"a", "b"}
    assert items == expert_training_items(shard, public, 0.2, seed=3)
    assert items != expert_training_items(shard, public, 0.2, seed=4)


def test_replay_never_asks_for_more_than_the_public_pool_holds():
    assert len(expert_training_items(_items("own", 90), _items("a", 5), 0.5, seed=0)) == 95
