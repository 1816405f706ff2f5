"""``voxguard simulate``: a VoIP platform's flow telemetry, with the attack catalogue on demand.

``model`` is the pure traffic model (per-second flows and a fast per-target totals path),
``attacks`` the catalogue scenarios and their spec grammar, ``sender`` the encode-and-send loop.
"""

from voxguard.ingest.simulate.attacks import (
    SCENARIOS,
    AttackTruth,
    Scenario,
    describe_scenarios,
    parse_attack_spec,
    parse_attack_specs,
)
from voxguard.ingest.simulate.model import (
    ModelParams,
    SecondFlows,
    TargetTotals,
    Totals,
    TrafficModel,
)
from voxguard.ingest.simulate.sender import SimulationReport, run_simulate, simulate

__all__ = [
    "SCENARIOS",
    "AttackTruth",
    "ModelParams",
    "Scenario",
    "SecondFlows",
    "SimulationReport",
    "TargetTotals",
    "Totals",
    "TrafficModel",
    "describe_scenarios",
    "parse_attack_spec",
    "parse_attack_specs",
    "run_simulate",
    "simulate",
]
