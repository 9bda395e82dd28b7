"""Orchestration over data and models: preparation, evaluation (and, later, GRPO training)."""
