"""Build the AgentDojo part of the injection sanitizer's development corpus.

AgentDojo (Debenedetti et al., 2024; PyPI `agentdojo`, MIT) ships realistic
tool environments (inboxes, calendars, cloud drives, hotel reviews, Slack
channels, bank transactions) with named injection points, each with a benign
default, plus attack templates and attacker goals. This script reads them
from the package's wheel (no need to install its dependencies) and writes:

- one benign twin per injection point: the record a tool would return, with
  the point's benign default in place;
- one injected case per (injection point, attack template): the same record
  with the template, filled with one of the suite's attacker goals, in place.
  The goal is the case's payload: what must not reach the model.

Usage: python agentdojo.py AGENTDOJO_WHEEL OUT_DIR
Writes OUT_DIR/agentdojo-injected.jsonl and OUT_DIR/agentdojo-benign.jsonl.
"""

import ast
import io
import json
import re
import sys
import zipfile

import yaml

# Templates that need the victim's tool list, or carry no goal, are left out.
SKIPPED_ATTACKS = {"tool_knowledge", "manual"}
USER = "Emma Johnson"
MODELS = ["GPT-4", "Claude", "the AI assistant", "Llama"]


def strings(tree):
    """Every module- and class-level name bound to a string constant."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def evaluate(node, names):
    """A string or f-string expression, with names looked up in `names`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(evaluate(part, names) for part in node.values)
    if isinstance(node, ast.FormattedValue):
        if isinstance(node.value, ast.Name):
            return names[node.value.id]
        raise KeyError(ast.dump(node.value))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return evaluate(node.left, names) + evaluate(node.right, names)
    raise KeyError(ast.dump(node))


def goals(wheel, suite, names):
    tree = ast.parse(wheel.read(f"agentdojo/default_suites/v1/{suite}/injection_tasks.py"))
    out = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        scope = dict(names)
        scope.update(strings(cls))
        for node in cls.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "GOAL" for t in node.targets):
                out.append(evaluate(node.value, scope))
    return out


def attacks(wheel):
    """(name, template) for every fixed-string attack with a {goal}."""
    out = []
    for path in ("agentdojo/attacks/baseline_attacks.py", "agentdojo/attacks/important_instructions_attacks.py"):
        tree = ast.parse(wheel.read(path))
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            name = next(
                (n.value.value for n in cls.body if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", "") == "name" for t in n.targets)),
                None,
            )
            docstring = ast.get_docstring(cls, clean=False)
            template = next(
                (n.value for n in ast.walk(cls) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and "{goal}" in n.value and n.value != docstring),
                None,
            )
            if name and template and name not in SKIPPED_ATTACKS and "{tools}" not in template:
                out.append((name, template))
    return out


class Loader(yaml.SafeLoader):
    pass


Loader.add_constructor("!include", lambda loader, node: None)


class Dumper(yaml.SafeDumper):
    pass


def text_block(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, text_block)

SENTINEL = re.compile(r"INJ__([a-z0-9_]+)__INJ")


def records(node, parent_is_list=False):
    """(dict, whether it is a list item) for every dict that holds an
    injection point somewhere below it, innermost first."""
    if isinstance(node, dict):
        for value in node.values():
            yield from records(value, False)
        if SENTINEL.search(json.dumps(node, default=str)):
            yield node, parent_is_list
    elif isinstance(node, list):
        for item in node:
            yield from records(item, True)


def record_of(found, point):
    """The record a tool would return for `point`: the innermost list item
    holding it (an e-mail, a hotel, a file), else the innermost dict."""
    holding = [(d, item) for d, item in found if f"INJ__{point}__INJ" in json.dumps(d, default=str)]
    return next((d for d, item in holding if item), holding[0][0])


def main():
    wheel_path, out = sys.argv[1], sys.argv[2]
    wheel = zipfile.ZipFile(wheel_path)
    names = {}
    for path in wheel.namelist():
        if path.endswith(".py") and path.startswith("agentdojo/default_suites/"):
            names.update(strings(ast.parse(wheel.read(path))))
    templates = attacks(wheel)
    injected, benign = [], []
    for suite in ("workspace", "travel", "banking", "slack"):
        base = f"agentdojo/data/suites/{suite}/"
        vectors = yaml.safe_load(wheel.read(base + "injection_vectors.yaml"))
        suite_goals = goals(wheel, suite, names)
        seen = set()
        files = sorted(p for p in wheel.namelist() if p.startswith(base) and p.endswith(".yaml")
                       and not p.endswith("injection_vectors.yaml"))
        for path in files:
            raw = wheel.read(path).decode()
            raw = re.sub(r"\{(" + "|".join(map(re.escape, vectors)) + r")\}", r"INJ__\1__INJ", raw)
            tree = yaml.load(io.StringIO(raw), Loader=Loader)
            found = list(records(tree))
            for point in dict.fromkeys(SENTINEL.findall(raw)):
                if point in seen:
                    continue
                seen.add(point)
                record = record_of(found, point)
                text = yaml.dump(record, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=10_000)

                def fill(value, _point=point):
                    return SENTINEL.sub(
                        lambda m: value if m.group(1) == _point else str(vectors[m.group(1)]["default"]), text)

                ident = f"{suite}/{point}"
                benign.append({"id": ident, "technique": "agentdojo/benign-twin", "text": fill(str(vectors[point]["default"]))})
                for i, (attack, template) in enumerate(templates):
                    goal = suite_goals[(len(seen) + i) % len(suite_goals)]
                    attack_text = template.format(goal=goal, user=USER, model=MODELS[(len(seen) + i) % len(MODELS)])
                    injected.append({"id": f"{ident}/{attack}", "technique": f"agentdojo/{attack}",
                                     "text": fill(attack_text), "payload": goal})
    for name, cases in (("agentdojo-injected", injected), ("agentdojo-benign", benign)):
        with open(f"{out}/{name}.jsonl", "w") as f:
            for case in cases:
                f.write(json.dumps(case, ensure_ascii=False) + "\n")
    print(f"{len(injected)} injected, {len(benign)} benign cases from {len(templates)} attacks")


if __name__ == "__main__":
    main()
