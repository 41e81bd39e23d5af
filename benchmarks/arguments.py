"""Command-line arguments shared by the benchmarks that study one seed of a bench run."""

from __future__ import annotations

import argparse


def seed_run_parser(doc: str, ratios: str) -> argparse.ArgumentParser:
    """Return a parser described by ``doc``'s first line with ``--dataset`` (mnist), ``--ratios``
    (default ``ratios``, a comma list), ``--seed`` (0), ``--runs-dir`` (runs/bench) and
    ``--threads`` (1); a benchmark adds its own arguments to it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--ratios", default=ratios)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default="runs/bench")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def ratio_list(text: str) -> list[float]:
    """The forget ratios of a comma list such as ``"0.1,0.5,0.9"``."""
    return [float(r) for r in text.split(",")]
