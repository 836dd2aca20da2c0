"""The live loop: events and decisions as they arrive, the durable event log, live customer state
(session blend, drift) kept in a state store, and the request-time decisions of experiments and the
online bandit."""
