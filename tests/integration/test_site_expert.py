"""A deployment site that brings its own private data and expert model (`fedgrpo expert serve --data
--model`, or node_config data-path / model-dir)."""

from __future__ import annotations

import json

import pytest

from fedgrpo.engines.experts import build_site_expert
from fedgrpo.errors import ConfigError
from fedgrpo.types import Reads, ScoreItem, ScoreRequest


@pytest.fixture(scope="module")
def own_data(prepared, tmp_path_factory):
    """Three training-pool spelling questions the site holds with their answers."""
    held = [q for q in prepared.splits.pool if q.domain == "spelling"][:3]
    path = tmp_path_factory.mktemp("site") / "private.jsonl"
    path.write_text("".join(json.dumps({"question": q.question, "answer": q.answer}) + "\n" for q in held))
    return path, held


def test_own_data_and_model_score_held_questions_by_their_answers(prepared, tiny_config, own_data):
    path, held = own_data
    expert = build_site_expert(tiny_config, "hospital-a", data_path=str(path), domain="spelling",
                               model_dir=str(prepared.expert_dirs["client-1"]))
    hello = expert.hello()
    # An answer-matching scorer asks for the candidates' answers only, and declares no DP it was not given.
    assert (hello.expert_id, hello.domain, hello.reads, hello.privacy) == ("hospital-a", "spelling", Reads.ANSWERS, {})
    q = held[0]
    # The server sends the question without its answer; the site recognises it and uses its own.
    request = ScoreRequest(4, (ScoreItem(q.question_id, q.generator, q.question,
                                         (f"{q.answer}</answer>", "zzz</answer>")),))
    assert expert.score(request).rewards == (1.0, 0.0)


def test_own_data_without_a_model_fine_tunes_the_config_base_on_it(prepared, tiny_config, own_data):
    path, _ = own_data
    expert = build_site_expert(tiny_config, "hospital-b", data_path=str(path), domain="spelling")
    model_dir = expert._model_dir
    assert model_dir.parent == tiny_config.models.resolved_cache_dir()
    assert model_dir not in prepared.expert_dirs.values()  # trained on the site's data, not a shard


def test_a_model_directory_that_is_not_a_model_is_refused(tiny_config, own_data, tmp_path):
    path, _ = own_data
    with pytest.raises(ConfigError, match="config.json"):
        build_site_expert(tiny_config, "hospital-c", data_path=str(path), domain="spelling",
                          model_dir=str(tmp_path))
