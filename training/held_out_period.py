"""Warnings about a test period too thin to judge models by: said with the figures, not discovered later.

A time split holds out the last ``test_days`` of events, wherever they fall. Two ways it can leave
the evaluation almost empty without anything failing, both met by a new user training on a server's
event log (README "Evaluation and the served models"): the live events are dated when they arrived,
months after the shop's exported history, so the test period holds only those few events, and every
model scored 0 on six customers. train then picked its served model from a tie of zeros (the first in
the list, ``persona_popularity``), and nothing said so.

- **Few customers.** NDCG@10 of one customer is between 0 and 1 with a spread of about 0.25, so the
  mean over n customers moves by about 0.25 / sqrt(n): at 100 customers ±0.025, the size of the
  differences between models (README "Model quality"). Under ``MIN_TEST_CUSTOMERS`` the figures
  cannot rank the models.
- **A gap before the test period.** When the held-out events start long after the previous event (more
  than the test period is long), the test period is not "the last weeks of the same shop": the dates
  of one of the sources are likely not what the user thinks.
- **Nothing to pick by.** When no model placed any held-out item in its top k, there is no best model
  (``training.evaluation.best_model`` returns None), and the output says which one the server falls
  back to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from training.prepared_data import EvaluationSegment, PreparedData

MIN_TEST_CUSTOMERS = 100
MIN_GAP = dt.timedelta(days=7)  # shorter silences happen in any shop (a holiday closure)


def held_out_warnings(prepared: PreparedData, segments: Sequence[EvaluationSegment]) -> list[str]:
    """What makes this split's evaluation unfit to choose a model by; empty when nothing does."""
    warnings: list[str] = []
    split = prepared.split
    known = next((len(s.customer_ids) for s in segments if s.name == "all"), 0)
    if 0 < known < MIN_TEST_CUSTOMERS:
        warnings.append(
            f"the test period holds {known:,} known customer(s) with something new to recommend "
            f"({split.test_events.height:,} event(s) from {_day(split.test_start)}): figures on fewer than "
            f"{MIN_TEST_CUSTOMERS} customers cannot rank models (each mean moves by about "
            f"±{0.25 / known**0.5:.2f}); "
            + (
                "hold out more of the data in the test events file, or check it"
                if split.method == "predefined"
                else "raise [split] test_days or check the data's dates"
            )
        )
    train, test = split.train_events["timestamp"], split.test_events["timestamp"]
    last_train, first_test, last_test = train.max(), test.min(), test.max()
    if isinstance(last_train, dt.datetime) and isinstance(first_test, dt.datetime):
        assert isinstance(last_test, dt.datetime)
        gap = first_test - last_train
        period = max(last_test - split.test_start, last_test - first_test)
        if gap > max(period, MIN_GAP):
            warnings.append(
                f"the held-out events begin {gap.days:,} days after the previous event ({_day(last_train)} "
                f"to {_day(first_test)}), a longer gap than the test period itself: it is not the last weeks "
                "of the same history. Are the dates of every source right? (events of a server's event log "
                "are dated when they arrived)"
            )
    return warnings


def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d")
