"""The domain core of persona-engine: data, personas, models, ranking, decisions, the live loop and
evaluation. It imports nothing from ``serving``, ``training`` or ``cli`` and no gRPC or Prometheus,
so the same code runs in a training job, the server, a notebook or a Spark executor
(``tests/test_architecture.py`` checks it). ``Personalizer`` (one loaded artifact, every scoring
call) and ``live.live_loop.LiveLoop`` (a page request end to end) are the entry points above the
sub-packages."""
