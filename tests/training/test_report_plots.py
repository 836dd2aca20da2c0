"""The report's axes read as the data: percent ticks keep the decimal a tick step needs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from training.report.report_plots import percent_axis, percent_tick


def test_ticks_at_two_and_a_half_percent_steps_keep_their_decimal() -> None:
    fig, ax = plt.subplots()
    try:
        ax.set_ylim(0, 0.125)
        ax.set_yticks(np.arange(0, 0.1251, 0.025))
        percent_axis(ax)
        fig.canvas.draw()
        labels = [tick.get_text() for tick in ax.get_yticklabels()]
    finally:
        plt.close(fig)
    assert labels == ["0%", "2.5%", "5%", "7.5%", "10%", "12.5%"]


def test_whole_percents_show_no_decimal_and_small_shares_are_not_rounded_to_zero() -> None:
    assert [percent_tick(v) for v in (0.0, 0.1, 0.25, 1.0)] == ["0%", "10%", "25%", "100%"]
    assert percent_tick(0.001) == "0.1%"
    assert percent_tick(0.0025) == "0.25%"
