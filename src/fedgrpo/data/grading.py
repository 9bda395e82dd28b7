"""Answer equivalence by math-verify: how free-form answers (a user's math data) are graded.

Items from files name the pseudo-generator `MATH_VERIFY` (`data.files`): they have no reasoning-gym
verifier, so `data.gym.score_answer` compares their answers here. Every model-based expert also
asks this as a second opinion when the domain's verifier disagrees (another notation of the same
number: '5.0' for '5', '1/2' for '0.5', `\\frac{1}{2}` for '0.5').

math-verify is always called without its signal-based timeouts: scoring runs in worker threads
(the embedded engine, TRL's reward event loop), where `signal.alarm` raises.
"""

from __future__ import annotations

import functools

MATH_VERIFY = "math"  # the generator name of items graded by math-verify alone


@functools.lru_cache(maxsize=65536)
def math_equivalent(reference: str, candidate: str) -> bool:
    """True when math-verify finds `candidate` equal to `reference`; an unparsable answer is not."""
    try:
        from math_verify import parse, verify

        gold = parse(reference, parsing_timeout=None)
        pred = parse(candidate, parsing_timeout=None)
        return bool(gold and pred and verify(gold, pred, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - an unparsable answer is simply not equivalent
        return False
