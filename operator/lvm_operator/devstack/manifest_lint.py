"""Offline lint of what we ship: ``python -m lvm_operator.devstack.manifest_lint``.

* ``kubeconform -strict`` of the chart as ``helm template --include-crds`` renders it with the
  default values, with every option on (``tests/fixtures/chart-values-all.yaml``) and namespaced.
  Strict: an unknown field anywhere (a misspelt ``securityContext`` key, a probe field in the
  wrong place) is an error, as it is for ``kubectl apply --validate=strict``. Schemas, offline:
  Kubernetes' own from the ``kubernetes-validate`` package (its ``$ref`` s point at
  ``/api/_definitions.json``; they are rewritten to file URLs so kubeconform resolves them), and
  for custom resources schemas converted from their CRDs' ``openAPIV3Schema``: our own
  LVMRollout CRD (so ``examples/*.yaml`` are linted too), Kopf's peering, and the stand-ins of the
  Prometheus Operator's ``monitoring.coreos.com`` CRDs in ``tests/fixtures`` (their specs are
  free-form: only the top level of a ServiceMonitor, PodMonitor or PrometheusRule is checked).
* ``promtool check rules --lint=all --lint-fatal`` of the generated alert rules.

Exit status 0 when everything is clean; otherwise each problem is printed and the status is 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .tools import REPO_ROOT, cache_dir, locate, pinned_versions

CHART = REPO_ROOT / "charts" / "lvm-rollout"
RULES = REPO_ROOT / "operator" / "lvm_operator" / "alerts" / "lvm-alerts.rules.yaml"
#: CRDs of the custom resources the chart renders (their schemas are not Kubernetes').
CR_DEFINITIONS = (
    REPO_ROOT / "crds" / "lvmrollout.yaml",
    CHART / "crds" / "kopf-peering.yaml",
    REPO_ROOT / "tests" / "fixtures" / "monitoring-crds.yaml",
)
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "all-options": ["-f", str(REPO_ROOT / "tests" / "fixtures" / "chart-values-all.yaml")],
    "namespaced": ["--set", "watchNamespace=ml-models"],
    "all-options-namespaced": ["-f", str(REPO_ROOT / "tests" / "fixtures" /
                                         "chart-values-all.yaml"),
                               "--set", "watchNamespace=ml-models"],
}
_DEFS_REF = '"/api/_definitions.json#'


def kubeconform_binary() -> Path:
    version = pinned_versions()["KUBECONFORM_VERSION"]
    path = cache_dir() / "bin" / f"kubeconform-{version}" / "kubeconform"
    if not path.exists():
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build-tools.sh")], check=True)
    return path


def schema_minor_version() -> str:
    """The Kubernetes version whose schemas to use: the local apiserver's minor, ``1.34.0``."""
    major, minor, *_ = pinned_versions()["KUBERNETES_VERSION"].lstrip("v").split(".")
    return f"{major}.{minor}.0"


def write_kubernetes_schemas(out: Path, version: str) -> Path:
    """kubernetes-validate's strict schemas for ``version``, self-contained, under ``out``;
    returns the directory kubeconform's ``{{ .NormalizedKubernetesVersion }}`` names."""
    import kubernetes_validate

    src = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
           / f"v{version}-local-strict")
    if not src.is_dir():
        raise FileNotFoundError(f"kubernetes-validate ships no schemas for {version} ({src})")
    dest = out / f"v{version}-standalone-strict"
    dest.mkdir(parents=True, exist_ok=True)
    target = '"' + (dest / "_definitions.json").as_uri() + "#"
    for path in src.glob("*.json"):
        (dest / path.name).write_text(path.read_text().replace(_DEFS_REF, target))
    return dest


def _strict(schema: Any) -> Any:
    """An apiserver structural schema as strict JSON Schema: objects with properties refuse
    others (unless they preserve unknown fields), ``nullable`` admits null."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def write_crd_schemas(out: Path, crd_files: Iterable[Path]) -> Path:
    """``<group>/<kind>_<version>.json`` for every served version of every CRD in the files."""
    for path in crd_files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"].lower()
            for version in doc["spec"]["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schema.setdefault("properties", {}).update({
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": {"type": "object"}})
                dest = out / group / f"{kind}_{version['name']}.json"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(json.dumps(schema))
    return out


def render_chart(helm: Path, out: Path) -> list[Path]:
    rendered = []
    for name, args in VALUE_SETS.items():
        proc = subprocess.run([str(helm), "template", "lvm-rollout", str(CHART), "-n", "ml",
                               "--include-crds", *args],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"helm template ({name}) failed: {proc.stderr.strip()}")
        path = out / f"chart-{name}.yaml"
        path.write_text(proc.stdout)
        rendered.append(path)
    return rendered


def kubeconform(paths: Sequence[Path], work: Path) -> tuple[list[str], str]:
    """kubeconform -strict of ``paths``: the problems it reports (none: clean) and its summary.

    A resource kind without a schema is a problem too (never skipped)."""
    version = schema_minor_version()
    k8s = write_kubernetes_schemas(work / "schemas", version)
    crds = write_crd_schemas(work / "crd-schemas", CR_DEFINITIONS)
    proc = subprocess.run(
        [str(kubeconform_binary()), "-strict", "-summary", "-kubernetes-version", version,
         "-schema-location", f"{k8s}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
         "-schema-location",
         f"{crds}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
         *map(str, paths)],
        capture_output=True, text=True, timeout=300)
    lines = proc.stdout.splitlines()
    summary = next((line for line in lines if line.startswith("Summary:")), "")
    problems = [line for line in lines if line and line != summary]
    if proc.returncode != 0 and not problems:
        problems = [f"kubeconform exited {proc.returncode}: {proc.stderr.strip()[:500]}"]
    return problems, summary


def promtool_lint(rules: Path, promtool: Path) -> list[str]:
    proc = subprocess.run([str(promtool), "check", "rules", "--lint=all", "--lint-fatal",
                           str(rules)], capture_output=True, text=True, timeout=60)
    if proc.returncode == 0:
        return []
    return [f"promtool check rules --lint=all {rules.name}: {line}"
            for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lvm_operator.devstack.manifest_lint",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="*", type=Path,
                        help="lint these files instead of the rendered chart")
    args = parser.parse_args(argv)
    tools = locate()
    with tempfile.TemporaryDirectory(prefix="lvm-lint-") as tmp:
        work = Path(tmp)
        paths = args.manifests or [*render_chart(tools.helm, work),
                                   *sorted((REPO_ROOT / "examples").glob("*.yaml"))]
        problems, summary = kubeconform(paths, work)
        print(f"[lint] kubeconform -strict: {summary}")
        if not args.manifests:
            problems += promtool_lint(RULES, tools.promtool)
    for line in problems:
        print(line)
    what = "the given manifests" if args.manifests else (
        f"the chart ({len(VALUE_SETS)} value sets), examples/*.yaml and {RULES.name}")
    print(f"[lint] {what}: {'clean' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
