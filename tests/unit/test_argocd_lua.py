"""Issue 20 #3: the Argo CD health check and actions, run by a real Lua interpreter (Debian's
lua5.4; Argo CD itself embeds a Lua 5.1 VM, and the scripts use nothing newer) on objects whose
status the tick itself wrote (:class:`~test_controller_tick.Rollout`)."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_controller_steady import finish
from test_controller_tick import Rollout
from test_kstatus_conditions import (
    apply_failing,
    champion_not_serving,
    invalid,
    not_seen_yet,
    paused_by_command,
    progressing,
    promoted,
    rolled_back,
    steady,
)

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "tools" / "argocd"
LUA = shutil.which("lua5.4")


def lua_literal(value) -> str:
    """A JSON value as a Lua table constructor (null becomes an absent key, as in Argo CD)."""
    if isinstance(value, dict):
        items = [f"[{lua_literal(k)}]={lua_literal(v)}" for k, v in value.items()
                 if v is not None]
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "{" + ",".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # JSON string escapes are valid Lua escapes for this text


def _render_cm():
    spec = importlib.util.spec_from_file_location("render_cm", ARGOCD / "render_cm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER_CM = _render_cm()


def run_lua(script: Path | str, obj: dict, show: str) -> str:
    assert LUA is not None, "lua5.4 is missing: scripts/setup.sh installs Debian's package"
    text = script.read_text() if isinstance(script, Path) else script
    program = (f"obj = {lua_literal(obj)}\n"
               f"local function script()\n{text}\nend\n"
               f"local out = script()\n{show}\n")
    proc = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def health(obj: dict) -> tuple[str, str]:
    out = run_lua(ARGOCD / "health.lua", obj,
                  'io.write(out.status, "\\n", out.message or "")')
    status, _, message = out.partition("\n")
    return status, message


def no_status() -> Rollout:
    return Rollout()


@pytest.mark.parametrize(("make", "expected", "says"), [
    (no_status, "Progressing", "Waiting for the lvm-rollout operator"),
    (progressing, "Progressing", "step 1/3"),
    (apply_failing, "Progressing", ""),
    (paused_by_command, "Suspended", "paused"),
    (rolled_back, "Degraded", "RolledBack: "),
    (promoted, "Healthy", "promoted"),
    (steady, "Healthy", "steady"),
    (champion_not_serving, "Degraded", "ChampionNotServing: spec.champion names phase9-typo"),
    (invalid, "Degraded", "InvalidSpec: "),
    (not_seen_yet, "Progressing", "observe generation"),
])
def test_health_on_every_phase(make, expected, says):
    status, message = health(make().obj)
    assert status == expected, message
    assert says in message, message


def test_paused_for_a_person_is_suspended_with_the_checks_in_the_message():
    r = progressing()
    r.status["phase"] = "Paused"  # what an inconclusive timeout writes, condition and all
    conditions = [c for c in r.status["conditions"] if c["type"] != "Progressing"]
    r.status["conditions"] = [*conditions, {
        "type": "Progressing", "status": "False", "reason": "InconclusiveTimeout",
        "message": "inconclusive for 1h: P95 7.1 ms between 5 and 10 ms"}]
    assert health(r.obj) == ("Suspended", "inconclusive for 1h: P95 7.1 ms between 5 and 10 ms")


def discovery(obj: dict) -> dict[str, bool]:
    out = run_lua(ARGOCD / "actions" / "discovery.lua", obj,
                  'for name, a in pairs(out) do io.write(name, "=", tostring(a.disabled), "\\n") '
                  'end')
    return {k: v == "true" for k, v in (line.split("=") for line in out.split())}


def test_discovery_offers_what_the_phase_allows():
    enabled = {name for name, disabled in discovery(progressing().obj).items() if not disabled}
    assert enabled == {"promote", "abort", "pause"}
    enabled = {name for name, disabled in discovery(paused_by_command().obj).items()
               if not disabled}
    assert enabled == {"promote", "abort", "resume"}
    enabled = {name for name, disabled in discovery(rolled_back().obj).items() if not disabled}
    assert enabled == {"retry"}
    assert not any(not d for d in discovery(promoted().obj).values())


def act(verb: str, obj: dict) -> dict[str, str]:
    out = run_lua(RENDER_CM.action_script(verb), obj,
                  'for k, v in pairs(out.metadata.annotations) do io.write(k, "=", v, "\\n") end')
    return dict(line.split("=", 1) for line in out.split("\n") if line)


@pytest.mark.parametrize("verb", ["promote", "abort", "pause"])
def test_each_action_is_a_command_the_operator_runs(verb):
    r = progressing()
    annotations = act(verb, copy.deepcopy(r.obj))
    assert annotations["lvm.rollout.io/command"] == verb
    assert annotations["lvm.rollout.io/command-id"].startswith("argocd-")
    r.obj["metadata"]["annotations"] = annotations
    r.t += 1.0
    r.tick()
    assert r.status["lastCommand"]["verb"] == verb
    assert r.status["lastCommand"]["result"] == "accepted"


def test_retry_action_after_a_rollback():
    r = Rollout()
    finish(r, bad=True)
    r.obj["metadata"]["annotations"] = act("retry", copy.deepcopy(r.obj))
    r.t += 1.0
    r.tick()
    assert r.status["lastCommand"]["result"] == "accepted" and r.status["phase"] == "Progressing"


def test_the_argocd_cm_snippet_carries_the_scripts():
    out = subprocess.run([sys.executable, str(ARGOCD / "render_cm.py")], capture_output=True,
                         text=True, check=True).stdout
    assert (ARGOCD / "argocd-cm.yaml").read_text() == out, (
        "tools/argocd/argocd-cm.yaml is out of date: python tools/argocd/render_cm.py > "
        "tools/argocd/argocd-cm.yaml")
