"""Offers and layouts: eligibility rules, per persona and arm response estimates, the decision
policies that choose with known propensities, the online bandit, experiments and journey stages."""
