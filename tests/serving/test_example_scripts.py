"""The example scripts against a real server: a bad flag or a refused call ends in one line naming the
flag, with the server's status and message, exit 2 (1 when the server or network failed); never a
traceback, and never a request the help says is out of range."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from engine.live.event_log import EventLog
from serving.examples import personalize_page, record_events
from serving.server_process import SOURCE_ROOT, child_environment, free_port
from tests.serving.server_harness import InProcessServer, in_process_server, trained_artifacts


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    log = EventLog.open(tmp_path_factory.mktemp("examples") / "events.db")
    with in_process_server(trained_artifacts(tmp_path_factory).older, event_log=log) as running:
        yield running
    log.close()


@pytest.fixture(scope="module")
def customer(server: InProcessServer) -> str:
    return str(server.holder.current().model_customers.ids[0])


def test_the_walkthroughs_unknown_persona_is_one_line_naming_mix_not_a_traceback(
    server: InProcessServer, customer: str
) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "serving.examples.personalize_page", "--target", server.address),
            *("--customer", customer, "--mix", "tech_savy=1", "--timeout", "5"),
        ],
        cwd=SOURCE_ROOT,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "python -m serving.examples.personalize_page: error: --mix: INVALID_ARGUMENT: "
        "persona_mix.weights[0].persona_id: unknown persona 'tech_savy'; known: "
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-k", "0"], "argument -k: must be 1 to 200, got 0"),
        (["-k", "201"], "argument -k: must be 1 to 200, got 201"),
        (["-k", "-1"], "argument -k: must be 1 to 200, got -1"),
        (["--timeout", "0"], "argument --timeout: must be more than 0 seconds, got 0"),
        (["--wait", "-1"], "argument --wait: must be 0 or more seconds, got -1"),
        (["--mix", "tech_savvy"], "argument --mix: entry 'tech_savvy' is not persona=weight"),
        (["--customer", ""], "argument --customer: must not be empty"),
    ],
)
def test_personalize_page_refuses_flags_out_of_range_before_calling(
    server: InProcessServer, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        personalize_page.main(["--target", server.address, "--customer", "c1", *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"error: {message}")


def test_personalize_page_names_the_flag_behind_the_field_the_server_refuses(
    server: InProcessServer, customer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--target", server.address, "--customer", customer, "--timeout", "5"]
    assert personalize_page.main([*argv, "--cart", "x" * 300]) == 2
    assert capsys.readouterr().err == (
        "python -m serving.examples.personalize_page: error: --cart: INVALID_ARGUMENT: "
        "context.cart_item_ids[0]: at most 256 characters, got 300\n"
    )
    assert personalize_page.main([*argv, "-k", "200"]) == 0  # the help's range is the server's
    assert capsys.readouterr().out.count("\n  200. ") == 1


def test_record_events_names_the_flag_of_a_rejected_record_and_refuses_flags_that_do_not_apply(
    server: InProcessServer, customer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--target", server.address, "--customer", customer, "--timeout", "5"]
    assert record_events.main([*argv, "--item", "i1", "--price", "-3"]) == 2
    assert "rejected: --price: events[0].price_paid: must be in [0, 1e+15], got -3.0" in (
        capsys.readouterr().err
    )
    for wrong, message in (
        (["--item", "i1", "--arm", "a"], "--arm is for an outcome"),
        (["--decision-id", "d", "--outcome", "offer_shown", "--price", "3"], "--price is for an event"),
        (["--item", "i1", "--timeout", "0"], "argument --timeout: must be more than 0 seconds, got 0"),
    ):
        with pytest.raises(SystemExit) as exited:
            record_events.main([*argv, *wrong])
        assert exited.value.code == 2 and message in capsys.readouterr().err


def test_record_events_says_why_in_one_line_when_no_server_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--target", f"127.0.0.1:{free_port()}", "--customer", "c1", "--item", "i1", "--timeout", "1"]
    assert record_events.main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("python -m serving.examples.record_events: error: UNAVAILABLE: ")
