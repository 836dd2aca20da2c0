"""Offline scoring: ranking metrics, off-policy evaluation of decision policies, persona recovery
against planted truth, and experiment reports."""
