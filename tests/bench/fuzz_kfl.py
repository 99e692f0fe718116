"""Mutation fuzzing of the KFL parser, compiler and compiled predicates (not in the suite).

    .venv/bin/python tests/bench/fuzz_kfl.py [--inputs 100000] [--seed 1]

Seeds are every query of docs/KFL.md (valid and invalid) and of tests/unit/test_kfl.py's
expectations; each input is a seed after 1-5 mutations (character insert / delete / replace,
token insert from the language's vocabulary, truncation, splicing two seeds, duplication).
Every input must compile or raise KflError (nothing else); every compiled query is evaluated,
through its raw closure, on realistic entries and on random JSON-like ones, and must answer a
bool without raising. Prints counts, exceptions (must be 0) and inputs/s.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from shark import kfl  # noqa: E402
from shark.kfl import KflError  # noqa: E402

VOCABULARY = ["and", "or", "not", "in", "&&", "||", "!", "==", "!=", "<", "<=", ">", ">=", "(",
              ")", "[", "]", ".", ",", '"', "'", 'r"', "true", "false", "null", "0", "-1", "1e9",
              "status", "request", "response", "http", "tls", "startsWith(", "matches(", ".len()",
              '"\\u00e9"', '"\\x"', 'r"(?i)a+"', 'r"(("', '["a", 1]', "[0]", '["k"]', " ", "\n",
              "é", "\x00", "\\"]
ALPHABET = [chr(c) for c in range(32, 127)] + ["\n", "\t", "é", "\u2028", "\x00"]


def seeds() -> list[str]:
    doc = (ROOT / "docs" / "KFL.md").read_text()
    queries = {line for block in re.findall(r"```kfl(?:-invalid)?\n(.*?)```", doc, re.S)
               for line in block.splitlines() if line.strip()}
    from unit.test_kfl import EXPECTED  # noqa: PLC0415 - the test module holds more seeds
    return sorted(queries | set(EXPECTED))


def mutate(rng: random.Random, text: str, pool: list[str]) -> str:
    for _ in range(rng.randint(1, 5)):
        position = rng.randint(0, len(text))
        action = rng.randrange(7)
        if action == 0:
            text = text[:position] + rng.choice(ALPHABET) + text[position:]
        elif action == 1:
            text = text[:position] + text[position + rng.randint(1, 4):]
        elif action == 2 and position < len(text):
            text = text[:position] + rng.choice(ALPHABET) + text[position + 1:]
        elif action == 3:
            text = text[:position] + rng.choice(VOCABULARY) + text[position:]
        elif action == 4:
            text = text[:position]
        elif action == 5:
            other = rng.choice(pool)
            text = text[:position] + other[rng.randint(0, len(other)):]
        else:
            text = text[:position] + text[rng.randint(0, position):]
    return text


def random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-1000, 1000)
    if kind == 3:
        return rng.uniform(-1e6, 1e6)
    if kind in (4, 5):
        return rng.choice(["", "GET", "/api/v1", "json", "a\u00e9", "500", "http", "x" * 50])
    if kind in (6, 7):
        return {rng.choice(["status", "path", "method", "error", "headers", "k", "in", "0"]):
                random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def entries(rng: random.Random) -> list[dict]:
    from unit.test_kfl import SAMPLES  # noqa: PLC0415
    realistic = list(SAMPLES.values())
    randoms = []
    for _ in range(40):
        sample = {name: random_json(rng) for name in rng.sample(
            ["protocol", "status", "summary", "tags", "tls", "complete", "elapsed_ms", "request",
             "response", "src", "dst", "size", "notes"], rng.randint(0, 8))}
        randoms.append(sample)
    return realistic + randoms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pool = seeds()
    samples = entries(rng)
    counts = {"inputs": 0, "valid": 0, "kfl_errors": 0, "parse_exceptions": 0,
              "eval_exceptions": 0, "evaluations": 0}
    failures: list[str] = []
    started = time.perf_counter()
    for _ in range(args.inputs):
        text = mutate(rng, rng.choice(pool), pool)
        counts["inputs"] += 1
        try:
            query = kfl.compile(text)
        except KflError:
            counts["kfl_errors"] += 1
            continue
        except Exception:  # noqa: BLE001 - what the fuzzer is looking for
            counts["parse_exceptions"] += 1
            failures.append(f"compile {text!r}\n{traceback.format_exc()}")
            continue
        counts["valid"] += 1
        for sample in rng.sample(samples, 8):
            counts["evaluations"] += 1
            try:
                result = query.test(sample)
                if not isinstance(result, bool):
                    raise TypeError(f"answered {result!r}, not a bool")
            except Exception:  # noqa: BLE001
                counts["eval_exceptions"] += 1
                failures.append(f"evaluate {text!r} on {sample!r}\n{traceback.format_exc()}")
    elapsed = time.perf_counter() - started
    for name, value in counts.items():
        print(f"{name:18} {value}")
    print(f"{'seconds':18} {elapsed:.1f}")
    print(f"{'inputs/s':18} {counts['inputs'] / elapsed:,.0f}")
    for failure in failures[:10]:
        print("\n" + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
