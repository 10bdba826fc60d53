"""Configuration and sample sheets: load, validate against the JSON schemas, and type.

Schemas live in ``workflow/schemas/``. Every error is a :class:`~mrdflow.errors.ConfigError` whose
message names the file, the row (sheet line number, 1 = header) or key, the field and the cause.
"""

from __future__ import annotations

import copy
import csv
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from mrdflow.errors import ConfigError

if TYPE_CHECKING:
    from mrdflow.panels import Panel

__all__ = [
    "SCHEMA_DIR",
    "Tube",
    "fill_defaults",
    "load_config",
    "load_schema",
    "read_clinical",
    "read_sheet",
    "read_samples",
    "resolve_path",
    "schema_defaults",
    "schema_messages",
    "validate_config",
]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"
REPO_DIR = SCHEMA_DIR.parents[1]


def load_schema(name: str) -> dict:
    """Load ``workflow/schemas/<name>.schema.yaml``."""
    path = SCHEMA_DIR / f"{name}.schema.yaml"
    with open(path) as fh:
        return yaml.safe_load(fh)


def _where(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _describe(err: jsonschema.ValidationError) -> str:
    """A one-line, human cause for a schema error (names unknown keys explicitly)."""
    if err.validator == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown key(s) {', '.join(map(repr, extra))}{hint}"
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {err.validator_value}"
    if err.validator == "required":
        return err.message.replace("is a required property", "is required")
    return err.message


def schema_messages(schema: Mapping, instance: Any, source: str) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (JSON Schema 2020-12), one line each:
    ``<source>: <dotted.key>: <cause>``, sorted by key; empty when it is valid."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{source}: {_where(e.absolute_path)}: {_describe(e)}" for e in errors]


def _deref(spec: Mapping, root: Mapping) -> Mapping:
    """``spec`` with a local ``$ref`` (``#/$defs/<name>``) followed."""
    ref = spec.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        for part in ref[2:].split("/"):
            root = root[part]
        return root
    return spec


def fill_defaults(schema: Mapping, value: Any, *, root: Mapping | None = None) -> Any:
    """Fill ``value`` (a JSON-like mapping, changed in place and returned) with the ``default`` of
    every property of ``schema`` it lacks, recursively: into the properties it has (or was given
    by a default) and into the entries an ``additionalProperties`` schema describes."""
    root = schema if root is None else root
    schema = _deref(schema, root)
    if not isinstance(value, dict):
        return value
    props = schema.get("properties") or {}
    for key, spec in props.items():
        spec = _deref(spec, root)
        if key not in value and "default" in spec:
            value[key] = copy.deepcopy(spec["default"])
        if key in value:
            value[key] = fill_defaults(spec, value[key], root=root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        for key in value:
            if key not in props:
                value[key] = fill_defaults(extra, value[key], root=root)
    return value


@functools.cache
def _config_schema() -> dict:
    return load_schema("config")


def schema_defaults(*section: str) -> dict:
    """The defaults of a config section, from ``config.schema.yaml`` (a fresh dict each call).

    ``schema_defaults("qc")`` gives every ``qc`` key with its default; ``schema_defaults("mrd",
    "hemodilution")`` a nested section. The settings classes take their field defaults from here,
    so the schema is the one place a default is written.
    """
    root = _config_schema()
    spec: Mapping = root
    for name in section:
        try:
            spec = _deref(spec, root)["properties"][name]
        except KeyError:
            raise KeyError(f"config schema has no section {'.'.join(section)!r}") from None
    return fill_defaults(spec, {}, root=root)


def validate_config(config: Mapping, *, source: str = "config") -> dict:
    """Validate ``config`` against the config schema and return a filled copy: every key it leaves
    out gets the schema's ``default`` (:func:`fill_defaults`); ``config`` itself is not changed."""
    schema = _config_schema()
    lines = schema_messages(schema, config, source)
    if lines:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    cfg = fill_defaults(schema, copy.deepcopy(dict(config)))
    if cfg["simulate"]["enabled"] and not cfg["simulate"].get("design"):
        raise ConfigError(f"{source}: simulate.design: required when simulate.enabled is true")
    return cfg


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a config file must be a mapping")
    return validate_config(doc, source=str(path))


def resolve_path(path: str | Path, workdir: str | Path = ".") -> Path:
    """An input path from the config: absolute as is; else under ``workdir`` if it exists there,
    else under the repository (so a run from another working directory still finds resources/)."""
    p = Path(path)
    if p.is_absolute():
        return p
    w = Path(workdir) / p
    if w.exists():
        return w
    r = REPO_DIR / p
    return r if r.exists() else w


# ---------------------------------------------------------------------------------------------
# Sheets
# ---------------------------------------------------------------------------------------------

def _coerce(value: str, spec: Mapping) -> Any:
    """Turn a TSV cell into the JSON type the schema asks for; leave it as text when it fails so
    the schema reports the cell."""
    types = spec.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    enum = spec.get("enum")
    v = value.strip()
    if v == "" or v.upper() in ("NA", "NAN", "NONE", "NULL"):
        if "null" in types or (enum is not None and None in enum):
            return None
        return v  # required and empty: the schema names it
    if "integer" in types:
        try:
            f = float(v)
            if math.isfinite(f) and f == int(f):
                return int(f)
        except ValueError:
            pass
        return v
    if "number" in types:
        try:
            f = float(v)
            return f if math.isfinite(f) else v
        except ValueError:
            return v
    if "boolean" in types:
        if v.lower() in ("true", "yes", "1"):
            return True
        if v.lower() in ("false", "no", "0"):
            return False
    return v


def read_sheet(path: str | Path, schema_name: str, *, key: str) -> list[dict]:
    """Read a tab-separated sheet and validate each row against ``<schema_name>.schema.yaml``.

    Errors name the file, the line number, the row's ``key`` value, the column and the cause; all
    bad cells are reported at once.
    """
    path = Path(path)
    schema = load_schema(schema_name)
    props = schema.get("properties", {})
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: sheet not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r) and not r[0].startswith("#")]
    if not rows:
        raise ConfigError(f"{path}: empty sheet (a header row is required)")
    header = [h.strip() for h in rows[0]]
    problems: list[str] = []
    unknown = [h for h in header if h not in props]
    if unknown:
        problems.append(f"unknown column(s) {unknown}; allowed: {sorted(props)}")
    missing = [h for h in schema.get("required", []) if h not in header]
    if missing:
        problems.append(f"missing required column(s) {missing}")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        problems.append(f"duplicate column(s) {dup}")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    out: list[dict] = []
    for lineno, raw in enumerate(rows[1:], start=2):
        if len(raw) > len(header):
            problems.append(f"line {lineno}: {len(raw)} cells but {len(header)} columns")
            continue
        raw = raw + [""] * (len(header) - len(raw))
        rec = {h: _coerce(c, props[h]) for h, c in zip(header, raw)}
        rec = {k: v for k, v in rec.items() if not (v is None and k not in schema.get("required", []))}
        for e in validator.iter_errors(rec):
            col = _where(e.absolute_path) if e.absolute_path else ""
            label = rec.get(key, "?")
            problems.append(f"line {lineno} ({key}={label}){', column ' + repr(col) if col else ''}: {_describe(e)}")
        out.append(rec)
    if problems:
        raise ConfigError(f"{path}: invalid rows:\n  " + "\n  ".join(problems))
    return out


@dataclass(frozen=True)
class Tube:
    """One row of the sample sheet: one FCS file (a tube of a specimen draw)."""

    sample_id: str
    patient_id: str
    specimen: str
    visit: str
    day: int
    infusion: int
    tube: str
    panel: str
    role: str
    fcs: str
    fmo_marker: str | None = None
    beads_per_tube: float | None = None
    blood_volume_ul: float | None = None
    line: int = 0

    @property
    def key(self) -> str:
        """Identifier of the file within the cohort: ``<sample_id>.<tube>``."""
        return f"{self.sample_id}.{self.tube}"


#: Visits that may come before infusion 1 (negative ``day`` counted from infusion 1).
PRE_INFUSION_VISITS = ("screening", "baseline")


def read_samples(path: str | Path, *, panels: Mapping[str, Panel] | Iterable[str] | None = None) -> list[Tube]:
    """Read and validate the sample sheet; check cross-row rules.

    Beyond the schema: (sample_id, tube) unique; a sample's tubes share patient, specimen, visit,
    day and infusion; ``fcs`` is a relative path inside the data folder (no ``..``, not absolute);
    ``panel`` is a known panel when ``panels`` is given; a sample before infusion 1 (negative
    ``day`` of infusion 1) is a screening or baseline visit. ``panels``: the known panels by name
    (:func:`mrdflow.panels.load_panels`), or only their names; with the panels, a stained tube of a
    panel whose read-out is ``cart`` must carry beads and volume.
    """
    path = Path(path)
    rows = read_sheet(path, "samples", key="sample_id")
    tubes = [Tube(**r, line=i) for i, r in enumerate(rows, start=2)]
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    first_of: dict[str, Tube] = {}
    known = set(panels) if panels is not None else None
    readout = {n: p.readout for n, p in panels.items()} if isinstance(panels, Mapping) else {}
    for t in tubes:
        k = (t.sample_id, t.tube)
        if k in seen:
            problems.append(f"line {t.line}: duplicate sample_id/tube {t.sample_id}/{t.tube} (first on line {seen[k]})")
        seen.setdefault(k, t.line)
        f = first_of.setdefault(t.sample_id, t)
        for attr in ("patient_id", "specimen", "visit", "day", "infusion"):
            if getattr(t, attr) != getattr(f, attr):
                problems.append(
                    f"line {t.line} (sample_id={t.sample_id}), column {attr!r}: {getattr(t, attr)!r} differs "
                    f"from line {f.line} ({getattr(f, attr)!r}); tubes of one sample share it"
                )
        p = PurePosixPath(t.fcs.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (len(t.fcs) > 1 and t.fcs[1] == ":"):
            problems.append(
                f"line {t.line} (sample_id={t.sample_id}), column 'fcs': {t.fcs!r} is outside the data folder "
                f"(give a path relative to data_dir, without '..')"
            )
        if known is not None and t.panel not in known:
            problems.append(
                f"line {t.line} (sample_id={t.sample_id}), column 'panel': unknown panel {t.panel!r}; "
                f"known: {sorted(known)}"
            )
        if t.infusion == 1 and t.day < 0 and t.visit not in PRE_INFUSION_VISITS:
            problems.append(
                f"line {t.line} (sample_id={t.sample_id}): day {t.day} is before infusion 1 but visit is "
                f"{t.visit!r}; only {' or '.join(PRE_INFUSION_VISITS)} samples precede it (check the day, the "
                f"visit or the infusion it counts from)"
            )
        needs_beads = readout.get(t.panel) == "cart" and t.role == "stain"
        if needs_beads and (t.beads_per_tube is None or t.blood_volume_ul is None):
            problems.append(
                f"line {t.line} (sample_id={t.sample_id}): CAR-T tube needs beads_per_tube and blood_volume_ul "
                f"for absolute counts"
            )
    fcs_seen: dict[str, int] = {}
    for t in tubes:
        if t.fcs in fcs_seen:
            problems.append(f"line {t.line}, column 'fcs': {t.fcs!r} already listed on line {fcs_seen[t.fcs]}")
        fcs_seen.setdefault(t.fcs, t.line)
        if t.role == "fmo" and not t.fmo_marker:
            problems.append(f"line {t.line} (sample_id={t.sample_id}), column 'fmo_marker': required for an FMO tube")
    if problems:
        raise ConfigError(f"{path}: invalid rows:\n  " + "\n  ".join(problems))
    return tubes


def read_clinical(path: str | Path, *, sample_patients: Iterable[str] | None = None) -> list[dict]:
    """Read and validate the clinical sheet (one row per patient, ``clinical.schema.yaml``).

    Beyond the schema: ``patient_id`` unique; a second infusion has both its date and its dose, and
    comes after the first; response and progression dates do not precede the first infusion; and,
    when ``sample_patients`` (the sample sheet's patients) is given, every patient appears in both
    sheets. Errors name the sheet, the line, the patient and the column.
    """
    path = Path(path)
    rows = read_sheet(path, "clinical", key="patient_id")
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line, r in enumerate(rows, start=2):
        pid = r["patient_id"]
        where = f"line {line} (patient_id={pid})"
        if pid in seen:
            problems.append(f"{where}: duplicate patient_id (first on line {seen[pid]})")
        seen.setdefault(pid, line)
        if (r.get("infusion2_date") is None) != (r.get("infusion2_dose_cells") is None):
            problems.append(f"{where}, columns 'infusion2_date'/'infusion2_dose_cells': give both or neither")
        first = r["infusion1_date"]
        for col in ("infusion2_date", "best_response_date", "progression_date"):
            v = r.get(col)
            if v is not None and v < first:  # ISO dates compare as text
                problems.append(f"{where}, column {col!r}: {v} is before infusion1_date {first}")
        if r.get("progression") == "yes" and r.get("progression_date") is None:
            problems.append(f"{where}, column 'progression_date': required when progression is 'yes'")
    if sample_patients is not None:
        in_samples = set(sample_patients)
        for pid in sorted(set(seen) - in_samples):
            problems.append(f"line {seen[pid]} (patient_id={pid}): patient has no row in the sample sheet")
        for pid in sorted(in_samples - set(seen)):
            problems.append(f"patient_id={pid}: in the sample sheet but not in the clinical sheet")
    if problems:
        raise ConfigError(f"{path}: invalid rows:\n  " + "\n  ".join(problems))
    return rows
