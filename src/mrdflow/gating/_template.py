"""A panel's gating template: the Gating-ML strategy (``resources/gating/<panel>.xml``, dimensions
named by panel markers, template coordinates in gate units) and its placement rules
(``<panel>.yaml``), or a FlowJo workspace's gates applied as drawn.

The rules are checked when the template loads: every method a rule names must be in the tables of
placement methods (:data:`~mrdflow.gating._placement.GATE_PLACERS` for gate-level methods,
:data:`~mrdflow.gating._bounds.BOUND_METHODS` for rectangle bounds).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mrdflow.gating._bounds import BOUND_METHODS
from mrdflow.gating._placement import gate_methods
from mrdflow.gating._rules import BoundRule, GateRule, GatingError
from mrdflow.gating._workspace import template_from_workspace

__all__ = ["GatingTemplate", "compile_template", "load_compiled_template", "load_template", "template_from_workspace"]

#: Version of the compiled-template JSON (:func:`compile_template`); another is compiled again.
COMPILED_VERSION = 1


@dataclass(frozen=True)
class GatingTemplate:
    """A panel's template: its gates (marker-named dimensions) and placement rules.

    ``strategy``: a :class:`~mrdflow.gating._model.Strategy` for a Gating-ML template (parsed by
    FlowKit, or read back from its compiled JSON without FlowKit); FlowKit's own strategy when
    ``static``: applied as drawn (a FlowJo workspace: dimensions name the file's channels and
    carry FlowJo's own transforms), nothing is placed from the data.
    """

    panel: str
    strategy: Any
    rules: Mapping[str, GateRule]
    source: str
    static: bool = False

    def gate_order(self) -> list[tuple[str, tuple[str, ...]]]:
        """(gate id, parent path) in an order where parents and boolean references come first.

        Gates are tracked by full path (a FlowJo workspace may use one name under two parents);
        a boolean reference without a path, and a rule's ``population``, name a gate id.
        """
        ids = self.strategy.get_gate_ids()
        done_paths: set[tuple[str, ...]] = {("root",)}
        done_ids: set[str] = set()
        out: list[tuple[str, tuple[str, ...]]] = []
        pending = list(ids)
        while pending:
            progressed = False
            for gid, path in list(pending):
                gate = self.strategy.get_gate(gid, gate_path=path)
                need_paths = {tuple(path)}
                need_ids: set[str] = set()
                if getattr(gate, "gate_type", None) == "BooleanGate":
                    for r in gate.gate_refs:
                        if r.get("path"):
                            rp = tuple(r["path"])
                            need_paths.add((rp if rp[:1] == ("root",) else ("root", *rp)) + (r["ref"],))
                        else:
                            need_ids.add(r["ref"])
                if gid in self.rules:  # gates whose events a bound rule uses (population:)
                    need_ids |= _rule_populations(self.rules[gid])
                if need_paths <= done_paths and need_ids <= done_ids:
                    out.append((gid, path))
                    done_paths.add(tuple(path) + (gid,))
                    done_ids.add(gid)
                    pending.remove((gid, path))
                    progressed = True
            if not progressed:
                raise GatingError(f"{self.source}: gate references form a cycle or name unknown gates: {pending}")
        return out


def _rule_populations(rule: GateRule) -> set[str]:
    """Gate ids named by ``population`` or ``exclude`` in a gate's bound rules (and their
    fallback/floor)."""
    out: set[str] = set()
    todo = list(rule.bounds.values())
    while todo:
        br = todo.pop()
        out.update(br.exclude)
        if br.population:
            out.add(br.population)
        todo += [b for b in (br.fallback, br.floor) if b is not None]
    return out

def _listing(names: Sequence[str], last: str) -> str:
    """``a, b, c or d`` (``last``: the word before the last name)."""
    return f"{', '.join(names[:-1])} {last} {names[-1]}" if len(names) > 1 else "".join(names)


def _bound_rule(spec: Mapping, where: str) -> BoundRule:
    known = {"method", "window", "k", "quantile", "given", "population", "exclude", "within_gate", "fallback",
             "floor"}
    unknown = set(spec) - known
    if unknown:
        raise GatingError(f"{where}: unknown field(s) {sorted(unknown)}")
    method = spec.get("method")
    if not isinstance(method, str) or method not in BOUND_METHODS:
        raise GatingError(f"{where}: method must be {_listing(list(BOUND_METHODS), 'or')} (got {method!r})")
    window = spec.get("window")
    if window is not None:
        if not (isinstance(window, list) and len(window) == 2 and window[0] < window[1]):
            raise GatingError(f"{where}: window must be [low, high] with low < high")
        window = (float(window[0]), float(window[1]))
    elif BOUND_METHODS[method].data:
        raise GatingError(f"{where}: method {method!r} needs a window")
    given = {}
    for dim, rng in (spec.get("given") or {}).items():
        if not (isinstance(rng, list) and len(rng) == 2):
            raise GatingError(f"{where}: given.{dim} must be [low, high] (null for open)")
        given[str(dim)] = (None if rng[0] is None else float(rng[0]), None if rng[1] is None else float(rng[1]))
    exclude = spec.get("exclude") or []
    if not (isinstance(exclude, list) and all(isinstance(g, str) for g in exclude)):
        raise GatingError(f"{where}: exclude must be a list of gate ids")
    within_gate = spec.get("within_gate", False)
    if not isinstance(within_gate, bool):
        raise GatingError(f"{where}: within_gate must be true or false")
    fb = spec.get("fallback")
    fl = spec.get("floor")
    if fl and not BOUND_METHODS[method].floor:
        floored = [name for name, m in BOUND_METHODS.items() if m.floor]
        raise GatingError(f"{where}: floor applies to {_listing(floored, 'and')} bounds only (method {method!r})")
    return BoundRule(
        method=method,
        window=window,
        k=float(spec.get("k", 4.0)),
        quantile=float(spec.get("quantile", 0.995)),
        given=given,
        population=spec.get("population"),
        exclude=tuple(exclude),
        within_gate=within_gate,
        fallback=_bound_rule(fb, f"{where}.fallback") if fb else None,
        floor=_bound_rule(fl, f"{where}.floor") if fl else None,
    )


def load_template(gating_dir: str | Path, panel: str) -> GatingTemplate:
    """Load ``<gating_dir>/<panel>.xml`` (Gating-ML, parsed by FlowKit) and ``<panel>.yaml``
    (placement rules)."""
    strategy, xml, rules_path = _parse_template(gating_dir, panel)
    rules = _load_rules(rules_path, rules_document(rules_path), strategy) if rules_path.is_file() else {}
    return GatingTemplate(panel, strategy, rules, str(xml))


def _parse_template(gating_dir: str | Path, panel: str):
    from mrdflow.gating._model import Strategy

    xml = Path(gating_dir) / f"{panel}.xml"
    rules_path = Path(gating_dir) / f"{panel}.yaml"
    if not xml.is_file():
        raise GatingError(f"{xml}: gating template not found for panel {panel!r}")
    import flowkit as fk

    try:
        fk_strategy = fk.parse_gating_xml(str(xml))
    except Exception as e:  # FlowKit raises several types for malformed XML
        raise GatingError(f"{xml}: not a valid Gating-ML 2.0 document ({type(e).__name__}: {e})") from None
    try:
        strategy = Strategy.from_flowkit(fk_strategy, where=f"{xml}: ")
    except ValueError as e:
        raise GatingError(str(e)) from None
    return strategy, xml, rules_path


def compile_template(gating_dir: str | Path, panel: str) -> dict:
    """The panel's template parsed once (FlowKit reads the Gating-ML, the rules are checked), as
    JSON for :func:`load_compiled_template`, which needs no FlowKit: the gates, the rules document
    (``extends`` resolved) and the SHA-256 of the files it came from."""
    strategy, xml, rules_path = _parse_template(gating_dir, panel)
    doc = rules_document(rules_path) if rules_path.is_file() else None
    if doc is not None:
        _load_rules(rules_path, doc, strategy)  # refuse a bad rules file here, naming it
    sources = {str(xml): _sha256(xml)}
    if rules_path.is_file():
        sources[str(rules_path)] = _sha256(rules_path)
    return {"version": COMPILED_VERSION, "panel": panel, "source": str(xml), "rules_path": str(rules_path),
            "sources": sources, "strategy": strategy.as_json(), "rules": doc}


def load_compiled_template(path: str | Path) -> GatingTemplate:
    """A template from its compiled JSON (:func:`compile_template`), without FlowKit."""
    from mrdflow.gating._model import Strategy

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise GatingError(f"{path}: cannot read the compiled template ({e})") from None
    if doc.get("version") != COMPILED_VERSION:
        raise GatingError(f"{path}: compiled template version {doc.get('version')!r}, expected {COMPILED_VERSION} "
                          "(compile it again)")
    strategy = Strategy.from_json(doc["strategy"])
    rules = _load_rules(Path(doc["rules_path"]), doc["rules"], strategy) if doc.get("rules") is not None else {}
    return GatingTemplate(doc["panel"], strategy, rules, doc["source"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rules_document(path: str | Path) -> dict:
    """A ``<panel>.yaml`` placement-rules document, with ``extends: <panel>`` resolved: the named
    panel's rules (a file beside this one) first, then this file's ``gates`` replacing or adding
    whole gate rules and its ``expected.markers`` replacing or adding markers. A panel that only
    adds gates to another (``pb_nk_beads``: ``pb_nk`` plus counting beads) so writes only those."""
    chain = _rules_chain(path)
    merged = chain[-1][1]
    for _, doc in reversed(chain[:-1]):
        merged = _extended(merged, doc)
    return merged


def rules_files(path: str | Path) -> list[Path]:
    """The rules files a ``<panel>.yaml`` reads: itself, then each panel it ``extends``."""
    return [p for p, _ in _rules_chain(path)]


def _rules_chain(path: str | Path) -> list[tuple[Path, dict]]:
    """(file, its document without ``extends``) from ``path`` along its ``extends`` chain; a
    loop, a missing base or a file that is no rules mapping is a :class:`GatingError` naming it."""
    path, chain = Path(path), []
    while True:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise GatingError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(doc, dict):
            raise GatingError(f"{path}: must be a mapping with 'gates' (and optionally 'expected', 'extends')")
        base_name = doc.pop("extends", None)
        chain.append((path, doc))
        if base_name is None:
            return chain
        base_path = path.with_name(f"{base_name}.yaml")
        if any(base_path == p for p, _ in chain):
            raise GatingError(f"{path}: extends {base_name!r} in a loop")
        if not base_path.is_file():
            raise GatingError(f"{path}: extends {base_name!r}, but {base_path} does not exist")
        path = base_path


def _extended(base: dict, doc: dict) -> dict:
    """``doc``'s rules laid over its base's (see :func:`rules_document`)."""
    merged = {**base, **{k: v for k, v in doc.items() if k not in ("gates", "expected")}}
    merged["gates"] = {**(base.get("gates") or {}), **(doc.get("gates") or {})}
    if base.get("expected") or doc.get("expected"):
        be, de = base.get("expected") or {}, doc.get("expected") or {}
        merged["expected"] = {**be, **{k: v for k, v in de.items() if k != "markers"},
                              "markers": {**(be.get("markers") or {}), **(de.get("markers") or {})}}
    return merged


def _load_rules(path: Path, doc: Mapping, strategy) -> dict[str, GateRule]:
    gates = doc.get("gates") or {}
    ids = {gid for gid, _ in strategy.get_gate_ids()}
    _check_expected(doc.get("expected"), f"{path}: expected", strategy, ids)
    rules: dict[str, GateRule] = {}
    for gid, spec in gates.items():
        where = f"{path}: gates.{gid}"
        if gid not in ids:
            raise GatingError(f"{where}: no gate {gid!r} in the template (gates: {sorted(ids)})")
        spec = dict(spec or {})
        method = spec.pop("method", "bounds")
        if method in gate_methods() or method == "fixed":
            if spec:
                raise GatingError(f"{where}: method {method!r} takes no other fields (got {sorted(spec)})")
            rules[gid] = GateRule(gid, method)
            continue
        if method != "bounds":
            names = _listing(["bounds", *gate_methods(), "fixed"], "or")
            raise GatingError(f"{where}: method must be {names} (got {method!r})")
        bounds = {}
        for key, b in spec.items():
            if not (key.endswith(".min") or key.endswith(".max")):
                raise GatingError(f"{where}: {key!r} is not '<dimension>.min' or '<dimension>.max'")
            bounds[key] = _bound_rule(b or {}, f"{where}.{key}")
        rules[gid] = GateRule(gid, "bounds", bounds)
        named = _rule_populations(rules[gid]) - ids
        if named:
            raise GatingError(f"{where}: population/exclude name(s) {sorted(named)} not gates of the template "
                              f"(gates: {sorted(ids)})")
    return rules


def _check_expected(section, where: str, strategy, ids: set[str]) -> None:
    """Check the optional ``expected:`` section: where the populations sat (gate units) on the
    instrument the windows were written for, per dimension ``negative``/``positive`` or, for
    scatter, ``main``; ``population``: the gate whose events they describe. The gating does not
    use it; :mod:`mrdflow.calibration` reads it."""
    if section is None:
        return
    if not isinstance(section, Mapping) or set(section) - {"population", "markers"}:
        raise GatingError(f"{where}: must be a mapping with 'markers' (and optionally 'population')")
    dims = {d.id for gid, path in strategy.get_gate_ids()
            for d in getattr(strategy.get_gate(gid, gate_path=path), "dimensions", None) or []}
    markers = section.get("markers")
    if not isinstance(markers, Mapping) or not markers:
        raise GatingError(f"{where}.markers: must be a mapping of dimension -> positions")
    for name, spec in [("population", {"population": section.get("population")}), *markers.items()]:
        w = where if name == "population" else f"{where}.markers.{name}"
        if name != "population" and name not in dims:
            raise GatingError(f"{w}: not a dimension of the template's gates ({sorted(dims)})")
        if not isinstance(spec, Mapping) or set(spec) - {"negative", "positive", "main", "population"}:
            raise GatingError(f"{w}: must be a mapping of negative, positive (or main, for scatter) and population")
        pop = spec.get("population")
        if pop is not None and pop not in ids:
            raise GatingError(f"{w}.population: {pop!r} is not a gate of the template (gates: {sorted(ids)})")
        for key in ("negative", "positive", "main"):
            v = spec.get(key)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
                raise GatingError(f"{w}.{key}: must be a number in [0, 1] (gate units), got {v!r}")
        if name == "population":
            continue
        if ("main" in spec) == ("negative" in spec):
            raise GatingError(f"{w}: give negative (and positive) for a fluorescence marker, or main for scatter")
        if spec.get("positive") is not None and (spec.get("negative") is None or spec["positive"] <= spec["negative"]):
            raise GatingError(f"{w}: positive ({spec['positive']}) must lie above negative ({spec.get('negative')})")
